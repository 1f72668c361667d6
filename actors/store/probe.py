"""A one-off look at a database for ``afterhours doctor`` (api/cli/doctor.py): can the engine
connect, which PostgreSQL is it, which of the engine's migrations are applied. Read only:
it creates nothing (not even ``schema_migrations``) and holds one connection for moments.

Here rather than in api/: only the store package talks to asyncpg, and this goes through
the store's own ``open_database``, so the doctor meets the same errors (and the same
masked DSN) a start would.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio
import trio_asyncio

from actors.store.db import open_database
from actors.store.migrations import load_migrations
from engine.errors import find_startup_error


@dataclass(frozen=True, slots=True)
class DatabaseProbe:
    server_version: str
    pending_migrations: list[int]  # this engine's, not applied yet (serve applies them)
    unknown_migrations: list[int]  # applied, but unknown to this engine (a newer one's)


def probe_database(dsn: str, *, timeout_s: float) -> DatabaseProbe:
    """Blocking (its own Trio run): ``StartupError`` when the server cannot be reached,
    ``trio.TooSlowError`` when a query does not answer within ``timeout_s``."""
    try:
        return trio.run(_probe, dsn, timeout_s)
    except BaseExceptionGroup as group:
        # The loop's nursery wraps what went wrong; the doctor prints one error, not a tree.
        raise find_startup_error(group) or _first_leaf(group) from None


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


async def _probe(dsn: str, timeout_s: float) -> DatabaseProbe:
    known = [migration.version for migration in load_migrations()]
    async with (
        trio_asyncio.open_loop(),
        open_database(dsn, connect_timeout_s=timeout_s, max_connections=1) as db,
    ):
        version = await db.fetchval("SHOW server_version", timeout_s=timeout_s)
        table = await db.fetchval("SELECT to_regclass('schema_migrations')", timeout_s=timeout_s)
        applied: list[int] = []
        if table is not None:
            rows = await db.fetch("SELECT version FROM schema_migrations", timeout_s=timeout_s)
            applied = sorted(row["version"] for row in rows)
    return DatabaseProbe(
        server_version=str(version),
        pending_migrations=[v for v in known if v not in applied],
        unknown_migrations=[v for v in applied if v not in known],
    )
