"""The whole engine in-process against a real PostgreSQL, probed over real HTTP."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime
from pathlib import Path

import trio

from api.root.engine import Engine, run_engine
from engine.config import settings_from_mapping
from engine.lifecycle import StopSignal
from tests.helpers import engine_settings, http_request, running_engine


async def idle_call(stop: StopSignal, *, task_status: trio.TaskStatus[None]) -> None:
    task_status.started()
    await stop.wait()


async def test_health_over_http_reports_uptime_and_active_sessions(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        base = engine.bound_urls[0]
        before = datetime.now(UTC)
        response = await http_request("GET", f"{base}/health")
        assert response.status == 200
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert isinstance(body, dict)
        assert set(body) == {"status", "timestamp", "uptime", "activeSessions"}
        assert body["status"] == "ok"
        assert body["activeSessions"] == 0
        assert isinstance(body["uptime"], int)
        assert body["uptime"] >= 0
        stamp = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
        assert abs((stamp - before).total_seconds()) < 5

        await engine.calls.start_child("CA0001", idle_call)
        await engine.calls.start_child("CA0002", idle_call)
        body = (await http_request("GET", f"{base}/health")).json()
        assert isinstance(body, dict)
        assert body["activeSessions"] == 2
    # The tree came down in order and the drained calls ended as stopped, not killed.
    stats = engine.calls.statistics()
    assert (stats.completed_total, stats.killed_total, stats.active) == (2, 0, 0)
    assert not any(child.running for child in engine.supervisor.statistics().children)


async def test_unknown_routes_and_methods_get_json_errors(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        base = engine.bound_urls[0]
        missing = await http_request("GET", f"{base}/nope")
        wrong_method = await http_request("POST", f"{base}/health")
    assert (missing.status, missing.json()) == (404, {"error": "no route for /nope"})
    assert wrong_method.status == 405
    assert wrong_method.json() == {"error": "POST not allowed on /health; use GET"}


async def test_signals_drain_then_shorten_the_drain_then_stop_at_once(
    fresh_database: str, tmp_path: Path
) -> None:
    values = engine_settings(fresh_database, tmp_path) | {"DRAIN_TIMEOUT_S": "600"}
    settings = settings_from_mapping(values)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            engine: Engine = await nursery.start(run_engine, settings)
            base = engine.bound_urls[0]
            await engine.calls.start_child("CA-never-ends", idle_and_deaf)
            os.kill(os.getpid(), signal.SIGTERM)
            while not engine.drain.begun:  # noqa: ASYNC110 - the signal handler drains
                await trio.sleep(0.01)
            first_signal_at_s = trio.current_time()
            # Draining: balancers are told to go elsewhere; the live call carries on.
            health = await http_request("GET", f"{base}/health")
            assert (health.status, health.json()["status"]) == (503, "draining")
            assert engine.calls.statistics().active == 1
            assert not engine.stop.requested  # a 600 s drain has only begun
            os.kill(os.getpid(), signal.SIGTERM)  # the second shortens the drain...
            await engine.stop.wait()
            await trio.sleep(0.2)
            assert engine.calls.statistics().active == 1  # ...the call gets its goodbye time
            os.kill(os.getpid(), signal.SIGTERM)  # the third stops at once
    assert trio.current_time() - first_signal_at_s < 5
    assert engine.calls.statistics().active == 0


async def idle_and_deaf(stop: StopSignal, *, task_status: trio.TaskStatus[None]) -> None:
    task_status.started()
    await trio.sleep_forever()  # ignores its stop request; only a cancel ends it
