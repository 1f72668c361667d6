"""A PostgreSQL that stops answering mid-protocol (SIGSTOP: a stalled failover, a full
disk), not one that refuses: under 60 calls' worth of records, the store notices within
its write budget, spools instead of queueing, refuses no sender, and once the server
runs again every record is in PostgreSQL exactly once.

A private embedded server, frozen for real: the postmaster and every backend (each
backend leads its own session, so they are found as the postmaster's children); the
waits are on that server, so real time."""

from __future__ import annotations

import contextlib
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trio

from actors.store.actor import WRITE_TIMEOUT_S, StoreActor
from actors.store.db import open_database
from engine.embedded_postgres import open_embedded_postgres
from engine.lifecycle import StopSignal
from engine.mailbox import RECORD_SEND_TIMEOUT_S, Mailbox, OverflowPolicy
from engine.messages import Alert, CallUpdated, EventLogWritten, StoreWrite
from engine.ports import free_port

CALLS = 60
FROZEN_S = 30.0
START = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)


def server_processes(postmaster_pid: int) -> list[int]:
    """The postmaster and its children (backends, checkpointer, WAL writer...)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == postmaster_pid:
                children.append(int(entry.name))
    return [postmaster_pid, *children]


def signal_all(pids: list[int], signum: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def call_records(call: int, tick: int) -> list[StoreWrite]:
    when = START + timedelta(seconds=tick)
    sid = f"CA{call:032x}"
    return [
        EventLogWritten(
            f"00000000-0000-4000-8000-{call:06d}{tick:06d}",
            when,
            "info",
            "callEvent",
            f"call {call} tick {tick}",
            call_sid=sid,
        ),
        CallUpdated(
            sid, project_id="acme", status="active", started_at=START, duration_s=float(tick)
        ),
    ]


async def test_a_frozen_postgres_loses_nothing_refuses_no_one_and_is_noticed_in_time(
    aio_loop: None, base_dir: Path
) -> None:
    tmp_path = base_dir
    inbox: Mailbox[StoreWrite] = Mailbox("store", 256, OverflowPolicy.BLOCK)  # as the engine's
    alerts: Mailbox[Alert] = Mailbox("alerts", 64, OverflowPolicy.DROP_NEWEST)
    refused = 0
    sent_events = 0
    async with (
        open_embedded_postgres(tmp_path / "pg", port=free_port()) as server,
        trio.open_nursery() as nursery,
    ):
        store = StoreActor(server.dsn, inbox, spool_dir=tmp_path / "spool", alerts=alerts)
        stop = StopSignal()
        await nursery.start(store.run, stop)

        async def call(n: int, ticks: int, first_tick: int) -> None:
            nonlocal refused, sent_events
            for tick in range(first_tick, first_tick + ticks):
                for record in call_records(n, tick):
                    # What every engine sender does: wait at most 2 s for room.
                    if not await inbox.send_within(record, RECORD_SEND_TIMEOUT_S):
                        refused += 1
                    sent_events += isinstance(record, EventLogWritten)
                await trio.sleep(0.5)

        async with trio.open_nursery() as calls:  # 2 s of normal life
            for n in range(CALLS):
                calls.start_soon(call, n, 4, 0)
        assert store.statistics().database_up

        frozen = server_processes(server.pid)
        signal_all(frozen, signal.SIGSTOP)
        frozen_at_s = trio.current_time()
        noticed_after_s: float | None = None
        try:
            async with trio.open_nursery() as calls:
                for n in range(CALLS):
                    calls.start_soon(call, n, int(FROZEN_S * 2), 4)
                while trio.current_time() - frozen_at_s < FROZEN_S:
                    if noticed_after_s is None and not store.statistics().database_up:
                        noticed_after_s = trio.current_time() - frozen_at_s
                    await trio.sleep(0.1)
        finally:
            signal_all(frozen, signal.SIGCONT)
        with trio.fail_after(60):  # the spool drains once the server runs again
            while store.statistics().spool.pending_records or store.statistics().backlog_records:  # noqa: ASYNC110
                await trio.sleep(0.2)
        stop.request()
        nursery.cancel_scope.deadline = trio.current_time() + 30
    async with (
        open_embedded_postgres(tmp_path / "pg", port=free_port()) as server,
        open_database(server.dsn, connect_timeout_s=10) as db,
    ):
        events = await db.fetchval("SELECT count(*) FROM event_log", timeout_s=10)
        distinct = await db.fetchval("SELECT count(DISTINCT id) FROM event_log", timeout_s=10)
        calls_rows = await db.fetch("SELECT duration_s FROM calls", timeout_s=10)
    assert refused == 0  # no sender found the store's inbox full
    assert noticed_after_s is not None
    assert noticed_after_s <= WRITE_TIMEOUT_S + 2.0  # the deadline fired on a frozen server
    assert events == distinct == sent_events  # every record once
    assert len(calls_rows) == CALLS
    assert store.statistics().records_lost_total == 0
    assert [a.title for a in alerts.drain_nowait()][:1] == ["Database unavailable"]
