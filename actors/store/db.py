"""The Postgres adapter: asyncpg behind trio-asyncio, in python-trio/triopg's pattern.

This package is the only code that imports asyncpg (an import-linter contract says so).
asyncpg runs only on asyncio; every call crosses the trio-asyncio bridge once (about
200 us here, docs/stack-measurements.md 3), so multi-statement work is written asyncio-side and
crosses once as a unit (``transaction``). Closing the pool is shielded and bounded, so a
cancelled engine still returns its connections and never hangs on a dead server.

``trio_asyncio.open_loop()`` must be open around every use (the composition root opens
it outermost).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import asyncpg
import outcome
import trio
from trio_asyncio import aio_as_trio

from engine.config import dsn_for_display
from engine.errors import StartupError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

T = TypeVar("T")

POOL_CLOSE_TIMEOUT_S = 3.0
RELEASE_TIMEOUT_S = 2.0  # returning a connection resets it: a round trip
ABORT_GRACE_S = 0.5  # after terminating a connection at a deadline

log = logging.getLogger("afterhours.store")

# What a database outage looks like from asyncpg: refused or reset connections, a server
# shutting down, a timeout. Callers treat these as "try again later", not as bugs.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    TimeoutError,
    trio.TooSlowError,
)

CONNECT_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, asyncpg.PostgresError)

# What ``transaction`` hands to its work: a pooled connection (generic only in the stubs).
if TYPE_CHECKING:
    Connection: TypeAlias = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]
else:
    Connection = asyncpg.pool.PoolConnectionProxy


class Database:
    """A pool, used from Trio. Every method takes a timeout, and the timeout fires even
    against a server that stopped answering mid-protocol (a SIGSTOP'd or stalled
    PostgreSQL): cancelling asyncpg there is not enough, since its cleanup (the rollback,
    the reset before the connection goes back to the pool) waits on the same frozen
    socket; measured, a 5 s timeout took about 28 s to fire. So at the deadline the
    connection in use is terminated (its socket closed at once, asyncpg's awaits fail),
    and the caller gets ``trio.TooSlowError`` within ``ABORT_GRACE_S`` of it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def transaction(
        self, work: Callable[[Connection], Awaitable[T]], *, timeout_s: float
    ) -> T:
        """Run ``work(connection)`` (asyncio-flavoured) inside one transaction, crossing
        the bridge once. A Trio cancellation cancels the statement server-side."""

        async def in_transaction(connection: Connection) -> T:
            async with connection.transaction():
                return await work(connection)

        return await self._with_connection(in_transaction, timeout_s)

    async def fetchval(self, sql: str, *args: Any, timeout_s: float) -> Any:
        async def one(connection: Connection) -> Any:
            return await connection.fetchval(sql, *args)

        return await self._with_connection(one, timeout_s)

    async def fetch(self, sql: str, *args: Any, timeout_s: float) -> list[asyncpg.Record]:
        async def rows(connection: Connection) -> list[asyncpg.Record]:
            return await connection.fetch(sql, *args)

        result: list[asyncpg.Record] = await self._with_connection(rows, timeout_s)
        return result

    async def execute(self, sql: str, *args: Any, timeout_s: float) -> str:
        async def status(connection: Connection) -> str:
            return await connection.execute(sql, *args)

        result: str = await self._with_connection(status, timeout_s)
        return result

    async def _with_connection(
        self, work: Callable[[Connection], Awaitable[T]], timeout_s: float
    ) -> T:
        held: list[Connection] = []

        async def unit() -> T:
            connection = await self._pool.acquire(timeout=timeout_s)
            held.append(connection)
            try:
                return await work(connection)
            finally:
                held.remove(connection)
                await self._pool.release(connection, timeout=RELEASE_TIMEOUT_S)

        done: list[outcome.Outcome[T]] = []
        terminated = False
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                done.append(await outcome.acapture(aio_as_trio(unit)))
                nursery.cancel_scope.cancel()

            nursery.start_soon(run)
            await trio.sleep(timeout_s)
            terminated = True
            for connection in held:  # the deadline: no more waiting on this server
                connection.terminate()
            await trio.sleep(ABORT_GRACE_S)  # asyncpg unwinds on the closed socket
            nursery.cancel_scope.cancel()  # and if it did not, cancel regardless
        if not done or (terminated and isinstance(done[0], outcome.Error)):
            raise trio.TooSlowError(f"no answer from PostgreSQL within {timeout_s:g} s")
        return done[0].unwrap()

    async def close(self) -> None:
        with trio.move_on_after(POOL_CLOSE_TIMEOUT_S) as scope:
            scope.shield = True
            await aio_as_trio(self._pool.close)()
        if scope.cancelled_caught:
            log.warning("database pool did not close in %.0f s; terminating", POOL_CLOSE_TIMEOUT_S)
            self._pool.terminate()


@asynccontextmanager
async def open_database(
    dsn: str, *, connect_timeout_s: float, max_connections: int = 8
) -> AsyncIterator[Database]:
    """A connected pool, or ``StartupError`` naming the server (password hidden)."""
    try:
        with trio.fail_after(connect_timeout_s):
            pool = await aio_as_trio(asyncpg.create_pool)(
                dsn,
                min_size=1,
                max_size=max_connections,
                timeout=connect_timeout_s,
                command_timeout=None,
            )
    except CONNECT_ERRORS as exc:
        raise StartupError(
            f"cannot reach the database at {dsn_for_display(dsn)}: {_reason(exc)} "
            "(check DATABASE_URL, or unset it to use the embedded PostgreSQL)"
        ) from exc
    database = Database(pool)
    try:
        yield database
    finally:
        await database.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError | TimeoutError):
        return "no answer in time"
    return str(exc) or type(exc).__name__
