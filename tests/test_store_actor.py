"""The store actor against a real PostgreSQL: batching, idempotence, merges of call
updates in any order, and a spool that keeps what PostgreSQL cannot take yet."""

from __future__ import annotations

import itertools
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
import trio
from trio_asyncio import aio_as_trio

from actors.store.actor import StoreActor
from actors.store.db import open_database
from actors.store.spool import Spool
from actors.store.write_errors import is_outage, is_poison, sqlstate_class
from engine.errors import StartupError
from engine.lifecycle import StopSignal
from engine.mailbox import Mailbox, OverflowPolicy
from engine.messages import (
    Alert,
    CallUpdated,
    EventLogWritten,
    FunctionCallRecorded,
    StoreWrite,
    new_event_id,
)


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


def at(minute: int, second: int = 0) -> datetime:
    return datetime(2026, 11, 26, 23, minute, second, tzinfo=UTC)


async def fetch(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    async with open_database(dsn, connect_timeout_s=10) as db:
        return [tuple(row) for row in await db.fetch(sql, timeout_s=5)]


async def count_rows(dsn: str, table: str = "event_log") -> int:
    return int((await fetch(dsn, f"SELECT count(*) FROM {table}"))[0][0])  # noqa: S608


async def run_store(
    dsn: str, spool_dir: Path, records: list[StoreWrite], **options: Any
) -> StoreActor:
    """Start a store, hand it ``records``, stop it (which drains), return it."""
    inbox: Mailbox[StoreWrite] = Mailbox("store", max(len(records), 1), OverflowPolicy.BLOCK)
    store = StoreActor(dsn, inbox, spool_dir=spool_dir, **options)
    stop = StopSignal()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run, stop)
            for record in records:
                inbox.send_nowait(record)
            stop.request()
    return store


async def test_records_are_written_in_batches_and_drained_on_stop(
    fresh_database: str, tmp_path: Path
) -> None:
    store = await run_store(
        fresh_database, tmp_path, [event(n) for n in range(1200)], batch_max=500
    )
    stats = store.statistics()
    assert stats.records_written_total == 1200
    assert stats.batches_written_total >= 3  # never more than 500 rows per transaction
    assert stats.spool.pending_records == 0
    assert await count_rows(fresh_database) == 1200
    rows = await fetch(
        fresh_database,
        "SELECT level, type, project_id, metadata->>'n', metadata->>'when' "
        "FROM event_log WHERE message = 'event 7'",
    )
    assert rows == [("warning", "actorCrashed", "acme-plumbing", "7", "2026-01-01T00:00:00Z")]


async def test_the_same_batch_twice_gives_the_same_rows(
    fresh_database: str, tmp_path: Path
) -> None:
    batch: list[StoreWrite] = [
        event(1, new_event_id()),
        CallUpdated("CA1", project_id="acme", status="active", started_at=at(0)),
        CallUpdated("CA1", status="completed", ended_at=at(3), duration_s=180.0),
        FunctionCallRecorded(new_event_id(), "CA1", "get_slots", "ok", latency_ms=120, at=at(1)),
    ]
    await run_store(fresh_database, tmp_path, batch)
    first = await fetch(fresh_database, "SELECT call_sid, status, duration_s FROM calls")
    await run_store(fresh_database, tmp_path, batch)
    assert await fetch(fresh_database, "SELECT call_sid, status, duration_s FROM calls") == first
    for table in ("event_log", "calls", "function_calls"):
        assert await count_rows(fresh_database, table) == 1


CALL_START = CallUpdated(
    "CA9",
    project_id="acme",
    from_number="+15550001111",
    to_number="+15552223333",
    status="active",
    started_at=at(0),
    answered_at=at(0, 1),
    stream_sid="MZ1",
)
STREAM_END = CallUpdated(
    "CA9",
    status="completed",
    intent="emergency",
    end_reason="caller_hung_up",
    ended_at=at(4),
    duration_s=239.0,
    transcript=[{"role": "assistant", "text": "Hi"}],
    usage={"input_tokens": 100},
    cost_usd=0.42,
)
STATUS_CALLBACK = CallUpdated(
    "CA9",
    source="twilio",
    status="completed",
    to_number="+15552223333",
    twilio_status="completed",
    twilio_duration_s=241,
)
BRIDGE_FAILED = CallUpdated("CA9", status="failed", error="model disconnected")


@pytest.mark.parametrize(
    ("updates", "expected_status"),
    [
        pytest.param([CALL_START, STREAM_END, STATUS_CALLBACK], "completed", id="in-order"),
        pytest.param([CALL_START, STATUS_CALLBACK, STREAM_END], "completed", id="callback-first"),
        pytest.param([STREAM_END, STATUS_CALLBACK, CALL_START], "completed", id="end-before-row"),
        pytest.param([STATUS_CALLBACK, CALL_START, STREAM_END], "completed", id="callback-row"),
        pytest.param([CALL_START, STATUS_CALLBACK, BRIDGE_FAILED], "failed", id="engine-verdict"),
        pytest.param([BRIDGE_FAILED, STATUS_CALLBACK, CALL_START], "failed", id="failed-first"),
    ],
)
async def test_call_updates_merge_to_the_same_row_in_any_order(
    fresh_database: str, tmp_path: Path, updates: list[StoreWrite], expected_status: str
) -> None:
    await run_store(fresh_database, tmp_path, updates)
    rows = await fetch(
        fresh_database,
        "SELECT project_id, from_number, status, started_at, answered_at, stream_sid, "
        "twilio_duration_s FROM calls",
    )
    assert rows == [
        ("acme", "+15550001111", expected_status, at(0), at(0, 1), "MZ1", 241),
    ]
    if STREAM_END in updates:
        (details,) = await fetch(
            fresh_database,
            "SELECT intent, end_reason, duration_s, transcript, cost_usd FROM calls",
        )
        assert details[:3] == ("emergency", "caller_hung_up", 239.0)
        assert details[3] == '[{"role": "assistant", "text": "Hi"}]'
        assert float(details[4]) == 0.42


async def test_start_fails_clearly_when_the_database_is_unreachable(
    aio_loop: None, tmp_path: Path
) -> None:
    inbox: Mailbox[StoreWrite] = Mailbox("store", 10, OverflowPolicy.BLOCK)
    store = StoreActor("postgresql://afterhours@127.0.0.1:1/afterhours", inbox, spool_dir=tmp_path)
    with trio.fail_after(30), pytest.raises(StartupError, match="cannot reach the database"):
        await store.run(StopSignal(), task_status=trio.TASK_STATUS_IGNORED)


async def test_a_killed_store_spools_what_it_held_and_the_next_one_writes_it(
    fresh_database: str, tmp_path: Path
) -> None:
    inbox: Mailbox[StoreWrite] = Mailbox("store", 10, OverflowPolicy.BLOCK)
    store = StoreActor(fresh_database, inbox, spool_dir=tmp_path, batch_max=2)
    locker = await aio_as_trio(asyncpg.connect)(fresh_database)
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                await nursery.start(store.run, StopSignal())
                # Another session holds the table: the store's first batch waits on it.
                await aio_as_trio(locker.execute)(
                    "BEGIN; LOCK TABLE event_log IN ACCESS EXCLUSIVE MODE"
                )
                for n in range(5):
                    inbox.send_nowait(event(n))
                # What a supervisor does when the shutdown budget runs out (real time:
                # the wait is on PostgreSQL's lock, not on our clock).
                await trio.sleep(0.5)
                nursery.cancel_scope.cancel()
    finally:
        await aio_as_trio(locker.close)()
    assert store.statistics().spool.pending_records == 5
    assert await count_rows(fresh_database) == 0
    # The next store (an engine restart) finds the spool and writes it first.
    successor = await run_store(fresh_database, tmp_path, [event(99)])
    assert successor.statistics().spool.pending_records == 0
    assert await count_rows(fresh_database) == 6


async def test_a_record_postgres_refuses_is_kept_aside_and_the_rest_written(
    fresh_database: str, tmp_path: Path
) -> None:
    bogus = FunctionCallRecorded(
        new_event_id(),
        "CA1",
        "book",
        "exploded",  # type: ignore[arg-type]
        latency_ms=5,
        at=at(1),
    )
    store = await run_store(fresh_database, tmp_path, [event(1), bogus, event(2)])
    assert await count_rows(fresh_database) == 2
    assert await count_rows(fresh_database, "function_calls") == 0
    assert store.statistics().spool.rejected_total == 1
    rejected = (tmp_path / "rejected.jsonl").read_text()
    assert '"outcome":"exploded"' in rejected
    assert "function_calls_outcome_check" in rejected


EARLIER_START = CallUpdated(
    "CA9", source="twilio", started_at=datetime(2026, 11, 26, 22, 59, 58, tzinfo=UTC)
)


async def test_every_order_and_duplicate_of_call_updates_gives_one_row(
    fresh_database: str, tmp_path: Path
) -> None:
    # What the bridge, the stream end and Twilio's callback report, including two final
    # statuses that disagree; each field is reported by one update, as in real calls.
    updates = [CALL_START, STREAM_END, STATUS_CALLBACK, BRIDGE_FAILED, EARLIER_START]
    orders = list(itertools.permutations(range(len(updates))))  # all 120
    batch: list[StoreWrite] = []
    for n, order in enumerate(orders):
        for index in (*order, order[0]):  # the first update again at the end: a duplicate
            batch.append(msgspec.structs.replace(updates[index], call_sid=f"CA{n:04d}"))
    await run_store(fresh_database, tmp_path, batch, batch_max=len(batch))
    rows = await fetch(
        fresh_database,
        "SELECT project_id, from_number, to_number, status, status_source, intent, end_reason,"
        " error, started_at, answered_at, ended_at, duration_s, transcript::text, usage::text,"
        " cost_usd, stream_sid, twilio_status, twilio_duration_s FROM calls",
    )
    assert len(rows) == len(orders)
    assert len(set(rows)) == 1, "the row depends on the order of the updates"
    (row,) = set(rows)
    # failed (the engine's) outranks every other status; its error stands; the outcome
    # fields of the others fill only what the failure did not say.
    assert row[3:8] == ("failed", "engine", "emergency", "caller_hung_up", "model disconnected")


async def test_a_read_only_database_spools_records_instead_of_rejecting_them(
    fresh_database: str, postgres_server_dsn: str, tmp_path: Path
) -> None:
    name = fresh_database.rsplit("/", 1)[1]
    admin = await aio_as_trio(asyncpg.connect)(postgres_server_dsn)

    async def set_read_only(read_only: bool) -> None:
        # As in a failover: the server turns read-only and existing sessions are cut.
        setting = "on" if read_only else "off"
        await aio_as_trio(admin.execute)(
            f'ALTER DATABASE "{name}" SET default_transaction_read_only = {setting}'
        )
        await aio_as_trio(admin.execute)(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )

    inbox: Mailbox[StoreWrite] = Mailbox("store", 16, OverflowPolicy.BLOCK)
    store = StoreActor(fresh_database, inbox, spool_dir=tmp_path, batch_delay_s=0.01)
    stop = StopSignal()
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                await nursery.start(store.run, stop)
                await set_read_only(True)
                for n in range(5):
                    inbox.send_nowait(event(n))
                # Polled: the store reports; the failure comes from the real server.
                while store.statistics().spool.pending_records < 5:  # noqa: ASYNC110
                    await trio.sleep(0.02)
                assert not store.statistics().database_up
                assert store.statistics().spool.rejected_total == 0
                await set_read_only(False)
                while store.statistics().spool.pending_records:  # noqa: ASYNC110
                    await trio.sleep(0.02)
                stop.request()
    finally:
        await aio_as_trio(admin.close)()
    assert await count_rows(fresh_database) == 5
    assert not (tmp_path / "rejected.jsonl").exists()


# Passes no webhook today, but a record must never block. Random, so that PostgreSQL
# cannot compress it into an index row (a repeated character would fit).
HUGE_SID = "CA" + secrets.token_hex(4000)


async def test_a_poison_record_between_good_ones_is_set_aside_and_alerted(
    fresh_database: str, tmp_path: Path
) -> None:
    """A CallSid of 8,000 characters (PostgreSQL would refuse it with SQLSTATE 54000, an
    index row too large) between good records: the good ones are written, the poison is
    set aside with its reason, and an alert says so; nothing retries it."""
    alerts: Mailbox[Alert] = Mailbox("alerts", 16, OverflowPolicy.DROP_NEWEST)
    records: list[StoreWrite] = [
        event(1),
        CallUpdated(HUGE_SID, status="active", started_at=at(1)),
        event(2),
        CallUpdated("CA" + "1" * 32, status="active", started_at=at(2)),
    ]
    store = await run_store(fresh_database, tmp_path, records, alerts=alerts)
    assert await count_rows(fresh_database) == 2
    assert await count_rows(fresh_database, "calls") == 1
    assert store.statistics().spool.rejected_total == 1
    assert store.statistics().spool.pending_records == 0
    assert "over 64, not a key" in (tmp_path / "rejected.jsonl").read_text()
    assert [a.title for a in alerts.drain_nowait()] == ["Record refused"]


async def test_a_poison_record_in_the_spool_does_not_block_the_replay_after_a_restart(
    fresh_database: str, tmp_path: Path
) -> None:
    spool = Spool(tmp_path)  # what an engine killed during an outage left behind
    spool.append([event(1), CallUpdated(HUGE_SID, status="active"), event(2)])
    spool.close()
    store = await run_store(fresh_database, tmp_path, [event(3)])
    assert await count_rows(fresh_database) == 3
    assert store.statistics().spool.pending_records == 0
    assert store.statistics().spool.rejected_total == 1


async def test_postgresqls_own_refusals_are_classed_by_sqlstate(
    fresh_database: str, tmp_path: Path
) -> None:
    """The classification against the real server's errors, not against our guesses."""
    await run_store(fresh_database, tmp_path, [])  # the schema
    async with open_database(fresh_database, connect_timeout_s=10) as db:
        refused: list[BaseException] = []
        for sql, args in [
            (
                "INSERT INTO calls (call_sid, status, status_rank) VALUES ($1, 'active', 0)",
                (HUGE_SID,),
            ),  # 54000: index row too large
            (
                "INSERT INTO calls (call_sid, status, status_rank) VALUES ($1, 'exploded', 0)",
                ("CA2",),
            ),  # 23514: check violation
            ("SELECT $1::int", ("twelve",)),  # asyncpg's own encoding: not an int
            ("SELECT 1/0", ()),  # 22012: division by zero
        ]:
            try:
                await db.execute(sql, *args, timeout_s=5)
            except Exception as exc:  # noqa: BLE001 - collected to be classified
                refused.append(exc)
    assert len(refused) == 4
    assert [sqlstate_class(e) for e in refused] == ["54", "23", "22", "22"]
    assert all(is_poison(e) and not is_outage(e) for e in refused)
    read_only = asyncpg.exceptions.ReadOnlySQLTransactionError("read-only")
    assert is_outage(read_only)
    assert not is_poison(read_only)
