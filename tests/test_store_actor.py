"""The store actor against a real PostgreSQL: batching, idempotence, drain on stop."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest
import trio
from trio_asyncio import aio_as_trio

from actors.store.actor import StoreActor
from actors.store.db import open_database
from engine.errors import StartupError
from engine.lifecycle import StopSignal
from engine.mailbox import Mailbox, OverflowPolicy
from engine.messages import EventLogWritten, StoreWrite, new_event_id


def event(n: int, event_id: str | None = None) -> EventLogWritten:
    return EventLogWritten(
        event_id=event_id or new_event_id(),
        timestamp=datetime(2026, 11, 26, 22, 0, n % 60, tzinfo=UTC),
        level="warning",
        type="actorCrashed",
        message=f"event {n}",
        project_id="acme-plumbing" if n % 2 else None,
        call_sid=None,
        metadata={"n": n, "when": datetime(2026, 1, 1, tzinfo=UTC)},
    )


async def count_rows(dsn: str) -> int:
    async with open_database(dsn, connect_timeout_s=10) as db:
        return int(await db.fetchval("SELECT count(*) FROM event_log", timeout_s=5))


async def test_messages_are_written_in_batches_and_drained_on_stop(fresh_database: str) -> None:
    inbox: Mailbox[StoreWrite] = Mailbox("store", 2000, OverflowPolicy.BLOCK)
    store = StoreActor(fresh_database, inbox, batch_max=500, batch_delay_s=0.05)
    stop = StopSignal()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run, stop)
            for n in range(1200):
                inbox.send_nowait(event(n))
            stop.request()  # everything queued must still reach the table
    stats = store.statistics()
    assert stats.rows_written_total == 1200
    assert stats.batches_written_total >= 3  # never more than 500 rows per transaction
    assert await count_rows(fresh_database) == 1200
    async with open_database(fresh_database, connect_timeout_s=10) as db:
        row = await db.fetch(
            "SELECT level, type, project_id, metadata->>'n' AS n, metadata->>'when' AS w "
            "FROM event_log WHERE message = 'event 7'",
            timeout_s=5,
        )
    assert [tuple(r) for r in row] == [
        ("warning", "actorCrashed", "acme-plumbing", "7", "2026-01-01T00:00:00Z")
    ]


async def test_a_retried_event_is_written_once(fresh_database: str) -> None:
    inbox: Mailbox[StoreWrite] = Mailbox("store", 10, OverflowPolicy.BLOCK)
    store = StoreActor(fresh_database, inbox, batch_delay_s=0.01)
    same_id = new_event_id()
    stop = StopSignal()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run, stop)
            inbox.send_nowait(event(1, same_id))
            inbox.send_nowait(event(1, same_id))
            stop.request()
    assert await count_rows(fresh_database) == 1


async def test_store_start_fails_clearly_when_the_database_is_unreachable(
    aio_loop: None,
) -> None:
    inbox: Mailbox[StoreWrite] = Mailbox("store", 10, OverflowPolicy.BLOCK)
    store = StoreActor("postgresql://afterhours@127.0.0.1:1/afterhours", inbox)
    with trio.fail_after(30), pytest.raises(StartupError, match="cannot reach the database"):
        await store.run(StopSignal(), task_status=trio.TASK_STATUS_IGNORED)


async def test_rows_a_killed_store_could_not_write_are_counted(fresh_database: str) -> None:
    inbox: Mailbox[StoreWrite] = Mailbox("store", 10, OverflowPolicy.BLOCK)
    store = StoreActor(fresh_database, inbox, batch_max=2, batch_delay_s=0.01)
    stop = StopSignal()
    locker = await aio_as_trio(asyncpg.connect)(fresh_database)
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                await nursery.start(store.run, stop)
                # Another session holds the table: the store's first batch waits on it.
                await aio_as_trio(locker.execute)(
                    "BEGIN; LOCK TABLE event_log IN ACCESS EXCLUSIVE MODE"
                )
                for n in range(5):
                    inbox.send_nowait(event(n))
                stop.request()
                # What a supervisor does when the shutdown budget runs out (real time:
                # the wait is on PostgreSQL's lock, not on our clock).
                await trio.sleep(0.5)
                nursery.cancel_scope.cancel()
    finally:
        await aio_as_trio(locker.close)()
    stats = store.statistics()
    assert (stats.rows_written_total, stats.rows_lost_total) == (0, 5)
    assert await count_rows(fresh_database) == 0


async def test_cancel_while_idle_after_a_write_counts_nothing_lost(fresh_database: str) -> None:
    inbox: Mailbox[StoreWrite] = Mailbox("store", 10, OverflowPolicy.BLOCK)
    store = StoreActor(fresh_database, inbox, batch_delay_s=0.01)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run, StopSignal())
            for n in range(3):
                inbox.send_nowait(event(n))
            # Polled: the write crosses to PostgreSQL and back; no event marks its end.
            while store.statistics().rows_written_total < 3:  # noqa: ASYNC110
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()  # idle now, waiting for the next message
    stats = store.statistics()
    assert (stats.rows_written_total, stats.rows_lost_total) == (3, 0)


async def test_cancel_while_a_batch_is_being_collected_counts_it(fresh_database: str) -> None:
    inbox: Mailbox[StoreWrite] = Mailbox("store", 10, OverflowPolicy.BLOCK)
    store = StoreActor(fresh_database, inbox, batch_max=100, batch_delay_s=30)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run, StopSignal())
            for n in range(2):
                inbox.send_nowait(event(n))
            # Polled until the store took both into its open batch (30 s window).
            while inbox.statistics().queued:  # noqa: ASYNC110
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    stats = store.statistics()
    assert (stats.rows_written_total, stats.rows_lost_total) == (0, 2)
