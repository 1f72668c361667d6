"""Instance leases against a real PostgreSQL: the lease row is kept, a dead instance's
live calls are finalised ``failed``/``engine_lost`` at its last heartbeat (once, however
many engines sweep), later words still merge, and a ``kill -9`` of a real engine leaves
no call live.

Lease expiry is the database's clock, so these wait on real time where the expiry is
the thing under test, with leases of a second or two and every wait bounded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from actors.store.actor import StoreActor
from actors.store.db import open_database
from actors.store.leases import ENGINE_LOST, Lease, keep_lease, new_instance_id, sweep
from actors.store.migrations import apply_migrations, load_migrations
from actors.store.routing import claim_stream
from actors.store.writes import write_records
from engine.lifecycle import StopSignal
from engine.mailbox import Mailbox, OverflowPolicy
from engine.messages import CallUpdated, StoreWrite
from engine.ports import free_port
from engine.simulator.caller import CallerConfig, place_call
from tests.helpers import (
    ADMIN_TOKEN,
    PUBLIC_URL,
    TWILIO_AUTH_TOKEN,
    http_request,
    sid,
    wait_until,
)
from tests.test_cli import closing, engine_env, start
from tests.test_simulated_caller import create_project
from tests.test_twilio_webhooks import signed

DEAD, ALIVE = "host-a-1-dead00", "host-b-2-live00"


async def migrated(dsn: str) -> None:
    async with open_database(dsn, connect_timeout_s=10) as db:
        await apply_migrations(db, load_migrations())


async def fetch(dsn: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    async with open_database(dsn, connect_timeout_s=10) as db:
        return [dict(row) for row in await db.fetch(sql, *args, timeout_s=5)]


async def write(dsn: str, records: list[StoreWrite]) -> None:
    async with open_database(dsn, connect_timeout_s=10) as db:

        async def unit(connection: Any) -> None:
            await write_records(connection, records)

        await db.transaction(unit, timeout_s=5)


async def lease_row(dsn: str, instance: str) -> dict[str, Any]:
    """The instance's lease row, or {} while it has none."""
    rows = await fetch(dsn, "SELECT * FROM instance_leases WHERE instance_id = $1", instance)
    return rows[0] if rows else {}


async def call(dsn: str, call_sid: str) -> dict[str, Any]:
    (row,) = await fetch(dsn, "SELECT * FROM calls WHERE call_sid = $1", call_sid)
    return row


async def add_lease(dsn: str, instance: str, *, heartbeat_ago_s: float, expired: bool) -> datetime:
    """A lease as an instance left it: its last heartbeat ``heartbeat_ago_s`` ago."""
    rows = await fetch(
        dsn,
        "INSERT INTO instance_leases (instance_id, started_at, heartbeat_at, expires_at) "
        "VALUES ($1, now() - interval '1 hour', now() - make_interval(secs => $2), "
        "now() + make_interval(secs => $3)) RETURNING heartbeat_at",
        instance, heartbeat_ago_s, -1.0 if expired else 60.0,
    )  # fmt: skip
    heartbeat: datetime = rows[0]["heartbeat_at"]
    return heartbeat


def active(call_sid: str, instance: str | None, started_at: datetime) -> CallUpdated:
    return CallUpdated(
        call_sid, project_id="acme", from_number="+15550100000", to_number="+15557654321",
        status="active", started_at=started_at, engine_instance=instance,
    )  # fmt: skip


async def test_the_store_keeps_its_lease_and_gives_it_up_on_a_clean_stop(
    fresh_database: str, tmp_path: Path
) -> None:
    lease = Lease(new_instance_id(), lease_s=1.0)
    inbox: Mailbox[StoreWrite] = Mailbox("store", 8, OverflowPolicy.BLOCK)
    store = StoreActor(fresh_database, inbox, spool_dir=tmp_path, lease=lease)
    stop = StopSignal()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run, stop)
            first = await wait_until(
                lambda: lease_row(fresh_database, lease.instance_id), timeout_s=5
            )

            async def renewed() -> dict[str, Any]:
                row = await lease_row(fresh_database, lease.instance_id)
                return row if row and row["heartbeat_at"] > first["heartbeat_at"] else {}

            later = await wait_until(renewed, timeout_s=5)
            stop.request()
        after_stop = await lease_row(fresh_database, lease.instance_id)
    assert first["started_at"] == later["started_at"]
    assert first["stopped_at"] is None
    # expires one lease after each heartbeat, by the database's clock
    assert later["expires_at"] - later["heartbeat_at"] == timedelta(seconds=1)
    assert after_stop["stopped_at"] is not None
    assert after_stop["expires_at"] <= after_stop["stopped_at"]


async def test_live_calls_of_an_expired_instance_are_finalised_and_later_words_merge(
    fresh_database: str,
) -> None:
    await migrated(fresh_database)
    last_heartbeat = await add_lease(fresh_database, DEAD, heartbeat_ago_s=30, expired=True)
    await add_lease(fresh_database, ALIVE, heartbeat_ago_s=1, expired=False)
    began = last_heartbeat - timedelta(seconds=90)
    await write(fresh_database, [
        active(sid(1), DEAD, began),
        active(sid(2), ALIVE, began),  # its instance is alive: still live
        active(sid(3), DEAD, last_heartbeat + timedelta(seconds=2)),  # after the heartbeat
        CallUpdated(sid(4), status="completed", engine_instance=DEAD, ended_at=began),
        active(sid(5), None, began),  # no instance known: not the sweep's to judge
    ])  # fmt: skip
    async with open_database(fresh_database, connect_timeout_s=10) as db:
        lost = await sweep(db, Lease(ALIVE, lease_s=20))
    assert lost == {DEAD: 2}
    row = await call(fresh_database, sid(1))
    assert (row["status"], row["end_reason"], row["error"]) == ("failed", ENGINE_LOST, None)
    assert row["ended_at"] == last_heartbeat
    assert row["duration_s"] == pytest.approx(90.0)
    started_late = await call(fresh_database, sid(3))
    assert started_late["ended_at"] == started_late["started_at"]
    assert started_late["duration_s"] == 0
    assert [(await call(fresh_database, sid(n)))["status"] for n in (2, 4, 5)] == [
        "active", "completed", "active",
    ]  # fmt: skip

    # Twilio's status callback, later: it fills in what Twilio knows, the verdict stays.
    hung_up = datetime.now(UTC)
    await write(fresh_database, [
        CallUpdated(sid(1), source="twilio", status="completed", twilio_status="completed",
                    twilio_duration_s=95, ended_at=hung_up,
                    started_at=hung_up - timedelta(seconds=95)),
        active(sid(1), DEAD, began),  # the dead instance's spool, replayed: no revival
    ])  # fmt: skip
    row = await call(fresh_database, sid(1))
    assert (row["status"], row["status_source"], row["end_reason"]) == (
        "failed", "engine", ENGINE_LOST,
    )  # fmt: skip
    assert (row["twilio_status"], row["twilio_duration_s"]) == ("completed", 95)
    assert row["ended_at"] == last_heartbeat

    # The instance was only cut off from the database: its own final word replaces the guess.
    await write(fresh_database, [
        CallUpdated(sid(3), status="completed", end_reason="caller_hung_up",
                    ended_at=hung_up, duration_s=40.0, engine_instance=DEAD),
    ])  # fmt: skip
    row = await call(fresh_database, sid(3))
    assert (row["status"], row["end_reason"], row["duration_s"]) == (
        "completed", "caller_hung_up", 40.0,
    )  # fmt: skip


async def test_an_instance_with_no_lease_row_is_lost_once_its_calls_are_still(
    fresh_database: str,
) -> None:
    """Killed before its first heartbeat reached the database: no lease row at all."""
    await migrated(fresh_database)
    now = datetime.now(UTC)
    await write(fresh_database, [active(sid(1), "never-renewed", now)])
    async with open_database(fresh_database, connect_timeout_s=10) as db:
        assert await sweep(db, Lease(ALIVE, lease_s=20)) == {}  # a lease's grace first
        await db.execute("UPDATE calls SET updated_at = now() - interval '30 seconds'", timeout_s=5)
        assert await sweep(db, Lease(ALIVE, lease_s=20)) == {"never-renewed": 1}
    row = await call(fresh_database, sid(1))
    assert (row["status"], row["end_reason"]) == ("failed", ENGINE_LOST)


async def test_two_engines_sweeping_at_once_finalise_each_call_once(
    fresh_database: str,
) -> None:
    await migrated(fresh_database)
    last_heartbeat = await add_lease(fresh_database, DEAD, heartbeat_ago_s=30, expired=True)
    calls = 500
    began = last_heartbeat - timedelta(seconds=60)
    await write(fresh_database, [active(sid(n), DEAD, began) for n in range(calls)])
    counts: list[int] = []

    async def sweeper(name: str) -> None:
        async with open_database(fresh_database, connect_timeout_s=10) as db:
            for _ in range(3):
                counts.append(sum((await sweep(db, Lease(name, lease_s=20))).values()))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for name in ("sweeper-1", "sweeper-2", "sweeper-3"):
                nursery.start_soon(sweeper, name)
    assert sum(counts) == calls
    rows = await fetch(
        fresh_database,
        "SELECT status, end_reason, ended_at, count(*) AS n FROM calls "
        "GROUP BY status, end_reason, ended_at",
    )
    assert rows == [
        {"status": "failed", "end_reason": ENGINE_LOST, "ended_at": last_heartbeat, "n": calls}
    ]


async def claim(dsn: str, call_sid: str, instance: str) -> None:
    async with open_database(dsn, connect_timeout_s=10) as db:
        work = partial(claim_stream, call_sid=call_sid, stream_sid="MZ1", project_id="acme",
                       engine_instance=instance)  # fmt: skip
        assert await db.transaction(work, timeout_s=5)


async def test_the_engine_instance_is_the_one_that_took_the_stream_in_either_order(
    fresh_database: str,
) -> None:
    """Behind a balancer (or between workers) the webhook and the stream reach different
    instances: the row is the stream's instance's, whichever is written first."""
    await migrated(fresh_database)
    now = datetime.now(UTC)
    webhook = active(sid(1), "webhook-instance", now)
    stream = CallUpdated(sid(1), status="active", stream_sid="MZ1", engine_instance="stream-one")
    await write(fresh_database, [webhook, stream])  # the store's record of the stream
    await write(fresh_database, [msgspec.structs.replace(stream, call_sid=sid(2))])
    await write(fresh_database, [msgspec.structs.replace(webhook, call_sid=sid(2))])
    await write(fresh_database, [msgspec.structs.replace(webhook, call_sid=sid(3))])
    await claim(fresh_database, sid(3), "stream-one")  # the stream's claim, after the webhook
    await claim(fresh_database, sid(4), "stream-one")  # ... before the webhook's record
    await write(fresh_database, [msgspec.structs.replace(webhook, call_sid=sid(4))])
    for n in (1, 2, 3, 4):
        row = await call(fresh_database, sid(n))
        assert (row["engine_instance"], row["stream_sid"]) == ("stream-one", "MZ1")
        assert row["started_at"] == now


class _DownDatabase:
    """A database that never answers, as ``keep_lease`` sees one."""

    def __init__(self) -> None:
        self.attempts = 0

    async def execute(self, sql: str, *args: Any, timeout_s: float) -> str:
        self.attempts += 1
        await trio.sleep(timeout_s)
        raise trio.TooSlowError

    async def transaction(self, work: Any, *, timeout_s: float) -> Any:
        raise AssertionError("not reached: the renewal fails first")


async def test_a_database_that_does_not_answer_is_logged_once_and_crashes_nothing(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    db = _DownDatabase()
    lease = Lease("host-1-abc", lease_s=20)
    stop = StopSignal()
    with caplog.at_level(logging.WARNING, "afterhours.store"):
        with trio.move_on_after(60):  # fifteen heartbeats' worth, on the autojump clock
            await keep_lease(db, lease, stop)  # type: ignore[arg-type]
    not_renewed = [r for r in caplog.records if "not renewed" in r.getMessage()]
    assert len(not_renewed) == 1
    assert "no answer in time" in not_renewed[0].getMessage()
    assert db.attempts >= 5  # it kept trying


def _status_callback(call_sid: str) -> dict[str, str]:
    return {
        "CallSid": call_sid, "AccountSid": "AC" + "0" * 32, "From": "+15550100000",
        "To": "+15557654321", "CallStatus": "completed", "CallDuration": "7",
        "Direction": "inbound",
    }  # fmt: skip


LIVE_CALLS = 3


async def test_a_killed_engine_leaves_no_call_live_once_its_lease_expires(
    fresh_database: str, tmp_path: Path
) -> None:
    """The real thing: ``afterhours serve`` with live calls, ``kill -9``, started again."""
    port, media_port = free_port(), free_port()
    env = engine_env(
        PORT=str(port), MEDIA_PORT=str(media_port), PUBLIC_URL=PUBLIC_URL,
        DATABASE_URL=fresh_database, DATA_DIR=str(tmp_path / "data"),
        ADMIN_TOKEN=ADMIN_TOKEN, TWILIO_AUTH_TOKEN=TWILIO_AUTH_TOKEN,
        ENGINE_LEASE_S="1", ADMIT_MAX_CPU="1", ADMIT_MAX_LOOP_LAG_S="10",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    engine = await start(tmp_path, env)
    async with closing(engine):
        await engine.wait_for_line("ready:")
        await create_project(url, {"id": "acme", "name": "Acme", "timezone": "UTC"},
                             "+15557654321")  # fmt: skip

        async def caller() -> None:
            config = CallerConfig(url, PUBLIC_URL, TWILIO_AUTH_TOKEN, "+15557654321")
            with contextlib.suppress(Exception):  # ended by the kill: the rows tell the rest
                await place_call(config, "silent")

        async def live() -> list[dict[str, Any]]:
            rows = await fetch(
                fresh_database,
                "SELECT * FROM calls WHERE status = 'active' AND stream_sid IS NOT NULL "
                "AND started_at IS NOT NULL",  # the stream claimed, the webhook's record in
            )
            return rows if len(rows) == LIVE_CALLS else []

        with trio.fail_after(30):
            async with trio.open_nursery() as callers:
                for _ in range(LIVE_CALLS):
                    callers.start_soon(caller)
                rows = await wait_until(live, timeout_s=20)
                os.kill(engine.process.pid, signal.SIGKILL)
                await engine.process.wait()
                callers.cancel_scope.cancel()
    killed_at = datetime.now(UTC)
    (first,) = await fetch(fresh_database, "SELECT * FROM instance_leases")
    assert {row["engine_instance"] for row in rows} == {first["instance_id"]}

    again = await start(tmp_path, env)
    async with closing(again):
        await again.wait_for_line("ready:")

        async def none_live() -> list[dict[str, Any]]:
            rows = await fetch(fresh_database, "SELECT * FROM calls")
            return rows if all(row["status"] != "active" for row in rows) else []

        # One lease (1 s) after the kill, and the new instance's next sweep (0.25 s).
        finalised = await wait_until(none_live, timeout_s=10)
        late = finalised[0]["call_sid"]
        path = "/twilio/status"
        params = _status_callback(late)
        answered = await http_request("POST", url + path, form=params, headers=signed(path, params))

        async def merged() -> dict[str, Any]:
            row = await call(fresh_database, late)
            return row if row["twilio_status"] else {}

        after_callback = await wait_until(merged, timeout_s=10)
        again.process.send_signal(signal.SIGTERM)
        assert await again.finish() == 0, again.output
    assert len(finalised) == LIVE_CALLS
    for row in finalised:
        assert (row["status"], row["end_reason"]) == ("failed", ENGINE_LOST)
        assert row["engine_instance"] == first["instance_id"]
        # its last heartbeat (or its start, for a call begun after that heartbeat)
        assert row["ended_at"] == max(first["heartbeat_at"], row["started_at"])
        assert row["started_at"] <= row["ended_at"] <= killed_at
        assert row["duration_s"] == pytest.approx(
            (row["ended_at"] - row["started_at"]).total_seconds()
        )
    assert "engine instance " + first["instance_id"] + " lost" in again.output
    assert answered.status in (200, 204)
    assert (after_callback["status"], after_callback["end_reason"]) == ("failed", ENGINE_LOST)
    assert (after_callback["twilio_status"], after_callback["twilio_duration_s"]) == (
        "completed", 7,
    )  # fmt: skip
    leases = await fetch(fresh_database, "SELECT * FROM instance_leases ORDER BY started_at")
    assert len(leases) == 2
    assert leases[0]["stopped_at"] is None  # killed: it never gave its lease up
    assert leases[1]["stopped_at"] is not None  # stopped cleanly
