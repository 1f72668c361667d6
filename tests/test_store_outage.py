"""A PostgreSQL outage during a burst of writes, with an engine restart in between:
afterwards every record is in the database exactly once.

A real server (the engine's embedded PostgreSQL on a fixed port) is stopped and started
under a running store. Waits are on the real server, so they poll the store's own
statistics under a deadline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio

from actors.store.actor import StoreActor, StoreStatistics
from actors.store.db import open_database
from engine.embedded_postgres import open_embedded_postgres
from engine.lifecycle import StopSignal
from engine.mailbox import Mailbox, OverflowPolicy
from engine.messages import (
    Alert,
    CallUpdated,
    EventLogWritten,
    FunctionCallRecorded,
    StoreWrite,
)
from engine.ports import free_port
from engine.store_queries import ListProjects, StoreQuery, StoreUnavailable, ask_store

WAIT_S = 60.0
START = datetime(2026, 11, 26, 20, 0, tzinfo=UTC)


def burst(first: int, count: int) -> list[StoreWrite]:
    """For each n: an event, a call's start and end, and a function call."""
    records: list[StoreWrite] = []
    for n in range(first, first + count):
        when = START + timedelta(seconds=n)
        records += [
            EventLogWritten(
                f"00000000-0000-4000-8000-{n:012d}", when, "info", "callEvent", f"e{n}"
            ),
            CallUpdated(f"CA{n:06d}", project_id="acme", status="active", started_at=when),
            FunctionCallRecorded(
                f"00000000-0000-4000-9000-{n:012d}", f"CA{n:06d}", "get_slots", "ok", 50, when
            ),
            CallUpdated(f"CA{n:06d}", status="completed", ended_at=when, duration_s=60.0),
        ]
    return records


class Server:
    """The real PostgreSQL, started and stopped under a running store, on one port."""

    def __init__(self, nursery: trio.Nursery, cluster: Path, port: int) -> None:
        self._nursery = nursery
        self._cluster = cluster
        self._port = port
        self._stop = trio.Event()
        self._done = trio.Event()

    async def start(self) -> str:
        self._stop, self._done = trio.Event(), trio.Event()
        dsn: str = await self._nursery.start(self._run)
        return dsn

    async def stop(self) -> None:
        self._stop.set()
        await self._done.wait()

    async def _run(self, *, task_status: trio.TaskStatus[str]) -> None:
        try:
            async with open_embedded_postgres(self._cluster, port=self._port) as server:
                task_status.started(server.dsn)
                await self._stop.wait()
        finally:
            self._done.set()


class RunningStore:
    def __init__(self, store: StoreActor, inbox: Mailbox[StoreWrite]) -> None:
        self.store = store
        self.inbox = inbox

    async def send(self, records: list[StoreWrite]) -> None:
        for record in records:
            await self.inbox.send(record)

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        with trio.fail_after(WAIT_S):
            while not condition():  # noqa: ASYNC110 - the store reports, nothing signals
                await trio.sleep(0.05)


@asynccontextmanager
async def running_store(
    dsn: str, spool_dir: Path, alerts: Mailbox[Alert] | None = None
) -> AsyncIterator[RunningStore]:
    inbox: Mailbox[StoreWrite] = Mailbox("store", 256, OverflowPolicy.BLOCK)
    store = StoreActor(
        dsn, inbox, spool_dir=spool_dir, alerts=alerts, batch_max=200, batch_delay_s=0.02
    )
    stop = StopSignal()
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run, stop)
        try:
            yield RunningStore(store, inbox)
        finally:
            stop.request()


async def test_outage_and_engine_restart_lose_nothing_and_duplicate_nothing(
    aio_loop: None, base_dir: Path
) -> None:
    spool_dir = base_dir / "spool"
    with trio.fail_after(WAIT_S * 3):
        async with trio.open_nursery() as nursery:
            server = Server(nursery, base_dir / "postgres", free_port())
            dsn = await server.start()
            alerts: Mailbox[Alert] = Mailbox("alerts", 16, OverflowPolicy.DROP_NEWEST)
            async with running_store(dsn, spool_dir, alerts) as running:
                await running.send(burst(0, 100))
                await running.wait_until(lambda: stats(running).records_written_total >= 400)

                # PostgreSQL stops under the running store: the burst goes on, to the spool.
                await server.stop()
                await running.send(burst(100, 150))
                await running.wait_until(lambda: stats(running).spool.pending_records >= 600)
                spooled_while_down = stats(running).spool.pending_records
                assert not stats(running).database_up

                # It comes back while the same store runs: the spool drains by itself.
                await server.start()
                await running.wait_until(lambda: stats(running).spool.pending_records == 0)
                assert stats(running).database_up
                await running.send(burst(250, 50))

                # Down again, and the engine stops with records still spooled (some of
                # them sent twice, as a retrying sender would)...
                await server.stop()
                await running.send(burst(300, 100) + burst(300, 10))
                await running.wait_until(lambda: stats(running).spool.pending_records >= 440)

            # ...then a new engine, once PostgreSQL is back, replays the spool first.
            await server.start()
            async with running_store(dsn, spool_dir) as running:
                await running.send(burst(400, 50))
                await running.wait_until(
                    lambda: (
                        stats(running).spool.pending_records == 0
                        and stats(running).backlog_records == 0
                    )
                )
                largest_spool = stats(running).spool.largest_backlog_records
            async with open_database(dsn, connect_timeout_s=10) as db:
                events = await db.fetchval("SELECT count(DISTINCT id) FROM event_log", timeout_s=5)
                event_rows = await db.fetchval("SELECT count(*) FROM event_log", timeout_s=5)
                calls = await db.fetch(
                    "SELECT status, count(*) FROM calls GROUP BY status", timeout_s=5
                )
                functions = await db.fetchval("SELECT count(*) FROM function_calls", timeout_s=5)
            await server.stop()
    assert spooled_while_down >= 600
    raised = [(a.type, a.level.name, a.title) for a in alerts.drain_nowait()]
    assert raised[:2] == [
        ("databaseError", "ERROR", "Database unavailable"),
        ("databaseError", "INFO", "Database back"),
    ]
    assert largest_spool >= 440  # what the second engine found and replayed
    assert (events, event_rows) == (450, 450)
    assert [tuple(row) for row in calls] == [("completed", 450)]
    assert functions == 450


def stats(running: RunningStore) -> StoreStatistics:
    return running.store.statistics()


async def test_admin_queries_get_a_clear_unavailable_while_postgres_is_down(
    aio_loop: None, base_dir: Path
) -> None:
    inbox: Mailbox[StoreWrite] = Mailbox("store", 8, OverflowPolicy.BLOCK)
    queries: Mailbox[StoreQuery] = Mailbox("store-queries", 8, OverflowPolicy.BLOCK)
    with trio.fail_after(WAIT_S):
        async with trio.open_nursery() as nursery:
            server = Server(nursery, base_dir / "postgres", free_port())
            dsn = await server.start()
            store = StoreActor(dsn, inbox, spool_dir=base_dir / "spool", queries=queries)
            stop = StopSignal()
            await nursery.start(store.run, stop)
            assert await ask_store(queries, ListProjects(), timeout_s=10) == []
            await server.stop()
            with pytest.raises(StoreUnavailable, match="PostgreSQL is unavailable"):
                await ask_store(queries, ListProjects(), timeout_s=10)
            await server.start()
            assert await ask_store(queries, ListProjects(), timeout_s=10) == []
            stop.request()
            await server.stop()


async def test_a_store_restarted_during_an_outage_starts_and_spools(
    aio_loop: None, base_dir: Path
) -> None:
    inbox: Mailbox[StoreWrite] = Mailbox("store", 64, OverflowPolicy.BLOCK)
    with trio.fail_after(WAIT_S):
        async with trio.open_nursery() as nursery:
            server = Server(nursery, base_dir / "postgres", free_port())
            dsn = await server.start()
            store = StoreActor(dsn, inbox, spool_dir=base_dir / "spool", batch_delay_s=0.01)
            running = RunningStore(store, inbox)
            first = StopSignal()
            async with trio.open_nursery() as first_run:  # the engine's start: database up
                await first_run.start(store.run, first)
                first.request()
            await server.stop()
            # The supervisor restarts the same actor while PostgreSQL is away: it starts at
            # once, and what it is sent waits in the spool.
            second = StopSignal()
            await nursery.start(store.run, second)
            await running.send(burst(0, 25))
            await running.wait_until(lambda: stats(running).spool.pending_records == 100)
            assert not stats(running).database_up
            await server.start()
            await running.wait_until(
                lambda: (
                    stats(running).records_written_total == 100
                    and stats(running).spool.pending_records == 0
                )
            )
            assert stats(running).database_up  # the moment the spool is empty, not later
            second.request()
            async with open_database(dsn, connect_timeout_s=10) as db:
                calls = await db.fetchval("SELECT count(*) FROM calls", timeout_s=5)
            await server.stop()
    assert calls == 25
