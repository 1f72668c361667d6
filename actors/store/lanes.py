"""The store's query lanes: each lane's queries answered a few at a time, beside the
write batches, each in its own transaction under its lane's bounds.

A query is a plain value (engine/store_queries.py); ``handlers.run_query`` maps it to
its SQL. The answer, or the error, goes back on the asker's reply channel as an
``outcome``: a database that is away answers ``StoreUnavailable``, input PostgreSQL
refuses answers ``ValidationFailed``, and nothing an asker sends crashes the store.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import asyncpg
import outcome
import trio
from asyncpg.exceptions._base import DataError as ClientDataError

from actors.store.handlers import run_query
from actors.store.write_errors import is_outage, is_poison
from engine.events import describe_error
from engine.field_checks import FieldError, ValidationFailed
from engine.store_queries import StoreUnavailable

if TYPE_CHECKING:
    from actors.store.db import Connection, Database
    from engine.lifecycle import StopSignal
    from engine.mailbox import Mailbox
    from engine.store_queries import Query, StoreQuery


@dataclass(frozen=True, slots=True)
class Lane:
    """How one query lane is served: how many of its queries run at once, and the
    bounds each gets. Server-side bounds sit under the askers' own timeouts, so a query
    the asker gave up on does not go on to commit later."""

    concurrency: int
    timeout_s: float
    statement_timeout_ms: int
    lock_timeout_ms: int


# Bulkheads: call setup (stream claims, routing loads) and analytics/admin reads each
# have their own lane and connections, so a heavy report never delays a caller. Both
# together stay below the pool's 8 connections, leaving the write batches theirs.
SETUP_LANE = Lane(concurrency=2, timeout_s=5.0, statement_timeout_ms=3000, lock_timeout_ms=1000)
READ_LANE = Lane(concurrency=2, timeout_s=10.0, statement_timeout_ms=8000, lock_timeout_ms=5000)


async def serve_lane(
    db: Database, queries: Mailbox[StoreQuery], lane: Lane, stop: StopSignal
) -> None:
    """Answer one lane's queries, a few at a time, beside the write batches."""
    limiter = trio.CapacityLimiter(lane.concurrency)
    async with trio.open_nursery() as nursery:
        while (query := await queries.receive_until(stop)) is not None:
            await limiter.acquire_on_behalf_of(query)
            nursery.start_soon(_answer, db, query, lane, limiter)


async def _answer(
    db: Database, query: StoreQuery, lane: Lane, limiter: trio.CapacityLimiter
) -> None:
    try:
        work = partial(_bounded, query.query, lane)
        result: outcome.Outcome[object] = outcome.Value(
            await db.transaction(work, timeout_s=lane.timeout_s)
        )
    except Exception as exc:  # noqa: BLE001 - not swallowed: it is the asker's answer
        if isinstance(exc, asyncpg.PostgresError | ClientDataError) and is_poison(exc):
            # Input that passed validation but not PostgreSQL (a NUL byte, say): the
            # asker's error, not a server error.
            failed = ValidationFailed([FieldError("body", describe_error(exc))])
            result = outcome.Error(failed)
        elif is_outage(exc):
            unavailable = StoreUnavailable(f"PostgreSQL is unavailable ({describe_error(exc)})")
            result = outcome.Error(unavailable)
        else:
            result = outcome.Error(exc)
    finally:
        limiter.release_on_behalf_of(query)
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, trio.WouldBlock):
        query.reply.send_nowait(result)  # the asker may have given up: that is fine


async def _bounded(query: Query[object], lane: Lane, connection: Connection) -> object:
    """Run a query with its lane's server-side statement and lock timeouts (this
    transaction only: ``SET LOCAL``)."""
    await connection.execute(
        f"SET LOCAL statement_timeout = {lane.statement_timeout_ms}; "
        f"SET LOCAL lock_timeout = {lane.lock_timeout_ms}"
    )
    return await run_query(connection, query)
