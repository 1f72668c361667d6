"""The embedded PostgreSQL supervised under a running engine (engine/postgres_supervisor.py).

Real processes throughout: the whole engine in this Trio run with its own embedded
PostgreSQL (no DATABASE_URL), calls over real sockets, and the postmaster killed with
``kill -9``, stopped with SIGSTOP, or given a configuration it cannot start with.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import api.root.database
from actors.store.db import open_database
from api.root.engine import Engine, run_engine
from engine import embedded_postgres
from engine.config import settings_from_mapping
from engine.errors import RestartIntensityExceeded, find_escalation
from engine.postgres_supervisor import RestartPolicy
from engine.simulator.mulaw import silence, tone
from engine.supervisor import RestartIntensity
from tests.helpers import ADMIN_TOKEN, engine_settings, http_request, sid, wait_until
from tests.test_call_e2e import open_stream, wait_for_final
from tests.test_twilio_webhooks import ANSWERED, call, setup_project, twilio_post

ENGINE_START_S = 60.0  # a first start runs initdb
# Long enough for the test to act while the server is down, short enough for a test.
TEST_FIRST_BACKOFF_S = 2.0


def embedded_settings(base_dir: Path) -> dict[str, str]:
    values = engine_settings("unused", base_dir) | {"MEDIA_PORT": "0"}
    del values["DATABASE_URL"]  # unset: the engine runs its own PostgreSQL
    return values


@asynccontextmanager
async def embedded_engine(base_dir: Path) -> AsyncIterator[Engine]:
    settings = settings_from_mapping(embedded_settings(base_dir))
    async with trio.open_nursery() as nursery:
        with trio.fail_after(ENGINE_START_S):
            engine: Engine = await nursery.start(run_engine, settings)
        try:
            yield engine
        finally:
            engine.stop.request()


async def health(engine: Engine) -> tuple[int, str]:
    response = await http_request("GET", f"{engine.bound_urls[0]}/health")
    return response.status, response.json()["status"]


async def detailed(engine: Engine) -> dict[str, Any]:
    url = f"{engine.bound_urls[0]}/health/detailed"
    body: dict[str, Any] = (await http_request("GET", url, token=ADMIN_TOKEN)).json()
    return body


async def event_log(dsn: str) -> list[str]:
    async with open_database(dsn, connect_timeout_s=5) as db:
        rows = await db.fetch("SELECT message FROM event_log", timeout_s=5)
    return [row["message"] for row in rows]


async def answer(engine: Engine, call_sid: str) -> Any:
    """A call's webhook and signed stream, started, with the greeting heard."""
    twiml = await twilio_post(engine, "/twilio/voice", call(call_sid, ANSWERED))
    peer, parameters = await open_stream(twiml.body.decode(), call_sid)
    await peer.start(parameters)
    greeting = await peer.listen(until_silent_s=1.0)
    assert any(e["event"] == "media" for e in greeting), "the caller heard no greeting"
    return peer


def test_the_backoff_doubles_up_to_its_cap() -> None:
    policy = RestartPolicy()
    assert [policy.backoff_s(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    with pytest.raises(ValueError, match="backoff"):
        RestartPolicy(first_backoff_s=2.0, max_backoff_s=1.0)


async def test_a_killed_postmaster_is_restarted_and_nothing_is_lost(
    base_dir: Path, monkeypatch: pytest.MonkeyPatch, aio_loop: None
) -> None:
    policy = RestartPolicy(first_backoff_s=TEST_FIRST_BACKOFF_S)
    monkeypatch.setattr(api.root.database, "EMBEDDED_POSTGRES_RESTARTS", policy)
    with trio.fail_after(ENGINE_START_S + 60):
        async with embedded_engine(base_dir) as engine:
            server = engine.embedded_postgres
            assert server is not None
            assert await health(engine) == (200, "ok")
            await setup_project(engine)
            during = await answer(engine, sid(1))

            killed_pid = server.statistics().pid
            assert killed_pid is not None
            os.kill(killed_pid, signal.SIGKILL)
            killed_at_s = trio.current_time()

            # Down: /health says degraded but stays 200 (calls are still answered here).
            async def degraded() -> bool:
                return await health(engine) == (200, "degraded")

            await wait_until(degraded, timeout_s=TEST_FIRST_BACKOFF_S)
            noticed_after_s = trio.current_time() - killed_at_s
            # The call in progress goes on, and ends, while the database is away.
            await during.speak(silence(100) + tone(400) + silence(700))
            assert any(e["event"] == "media" for e in await during.listen(until_silent_s=0.5))
            await during.hang_up()
            await during.aclose()

            async def spooled() -> dict[str, Any] | None:
                body = await detailed(engine)
                return body if body["services"]["database"]["spooledRecords"] else None

            down = await wait_until(spooled, timeout_s=TEST_FIRST_BACKOFF_S)
            assert server.statistics().state == "restarting"

            async def restarted() -> bool:
                return server.statistics().up

            await wait_until(restarted, timeout_s=TEST_FIRST_BACKOFF_S + 15)
            back_after_s = trio.current_time() - killed_at_s
            assert await health(engine) == (200, "ok")
            after = await answer(engine, sid(2))
            await after.hang_up()
            await after.aclose()
            dsn = engine.database_dsn
            # Both calls' records land: the one made while the server was down (from the
            # spool) and the one after.
            first = await wait_for_final_within(dsn, sid(1), timeout_s=30)
            second = await wait_for_final_within(dsn, sid(2), timeout_s=30)

            async def alerts_stored() -> list[str] | None:
                messages = await event_log(dsn)
                wanted = ("Embedded PostgreSQL exited", "Embedded PostgreSQL back")
                return messages if all(any(w in m for m in messages) for w in wanted) else None

            messages = await wait_until(alerts_stored, timeout_s=30)
            again = await detailed(engine)
            stats = server.statistics()

    assert noticed_after_s < 1.0  # the exit is seen at once, not at a poll
    assert back_after_s < TEST_FIRST_BACKOFF_S + 10
    assert down is not None
    assert messages is not None
    services = down["services"]["database"]
    assert (down["status"], services["status"]) == ("unhealthy", "down")
    assert services["embedded"]["status"] == "restarting"
    assert services["embedded"]["lastExit"]["how"] == "killed by SIGKILL"
    assert services["embedded"]["lastExit"]["pid"] == killed_pid
    assert (first["status"], first["end_reason"]) == ("completed", "caller_hung_up")
    assert second["status"] == "completed"
    transcript = json.loads(first["transcript"])
    assert [t["role"] for t in transcript] == ["assistant", "caller", "assistant"]
    # Each alert exactly once, though the first was made while the server was down.
    assert sum("Embedded PostgreSQL exited" in m for m in messages) == 1
    assert sum("Embedded PostgreSQL back" in m for m in messages) == 1
    assert (stats.restarts_total, stats.state) == (1, "up")
    assert stats.pid != killed_pid
    assert again["services"]["database"]["status"] == "up"
    assert again["services"]["database"]["embedded"]["restarts"] == 1


async def wait_for_final_within(dsn: str, call_sid: str, *, timeout_s: float) -> dict[str, Any]:
    """``wait_for_final``, with room for the store's replay backoff after an outage."""
    with trio.fail_after(timeout_s):
        while True:
            try:
                return await wait_for_final(dsn, call_sid)
            except trio.TooSlowError:
                continue


async def test_a_postmaster_that_stops_answering_is_killed_and_restarted(
    base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = RestartPolicy(first_backoff_s=0.1, probe_interval_s=0.2, hung_probes=2)
    monkeypatch.setattr(api.root.database, "EMBEDDED_POSTGRES_RESTARTS", policy)
    monkeypatch.setattr(embedded_postgres, "PROBE_TIMEOUT_S", 1.0)
    with trio.fail_after(ENGINE_START_S + 30):
        async with embedded_engine(base_dir) as running:
            server = running.embedded_postgres
            assert server is not None
            frozen_pid = server.statistics().pid
            assert frozen_pid is not None
            os.kill(frozen_pid, signal.SIGSTOP)  # alive, holding its port, answering nothing

            async def replaced() -> bool:
                stats = server.statistics()
                return stats.up and stats.pid != frozen_pid

            await wait_until(replaced, timeout_s=20)
            last = server.statistics().last_exit
            status = await health(running)
    assert last is not None
    assert (last.pid, last.hung, last.description) == (
        frozen_pid,
        True,
        "stopped answering and was killed",
    )
    assert status == (200, "ok")


async def test_a_postmaster_that_dies_at_every_start_stops_the_engine_with_one_line(
    base_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    policy = RestartPolicy(
        first_backoff_s=0.05, max_backoff_s=0.2, intensity=RestartIntensity(max_restarts=2)
    )
    monkeypatch.setattr(api.root.database, "EMBEDDED_POSTGRES_RESTARTS", policy)
    escalation = None
    with trio.fail_after(ENGINE_START_S + 30):
        try:
            async with embedded_engine(base_dir) as running:
                server = running.embedded_postgres
                assert server is not None
                cluster = server.data_dir
                # A configuration PostgreSQL refuses: every start from now on fails.
                with (cluster / "postgresql.conf").open("a") as conf:
                    conf.write("this is not a setting\n")
                pid = server.statistics().pid
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
                await trio.sleep_forever()  # the engine ends itself
        except BaseException as exc:  # noqa: BLE001 -- the escalation, as the CLI sees it
            escalation = find_escalation(exc)
    assert isinstance(escalation, RestartIntensityExceeded)  # the CLI: one line, exit 3
    line = str(escalation)
    assert "'embedded-postgres': child 'postmaster' needed more than 2 restarts" in line
    assert "exited during start-up" in line  # why the last start failed
    assert "\n" not in line
    critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert line in critical
    # The engine stopped in order: the give-up alert was flushed to the spool.
    spooled = (base_dir / "spool" / "records.jsonl").read_text()
    assert "supervisorEscalated" in spooled
    assert "Embedded PostgreSQL exited" in spooled
