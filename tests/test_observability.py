"""What operators read about the engine: /metrics (parsed with prometheus-client's own
parser and checked against a scripted set of calls), /stats, and /health/detailed going
unhealthy (503) while PostgreSQL is stopped and healthy again when it returns."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trio
from prometheus_client.parser import text_string_to_metric_families

from actors.store.db import open_database
from api.http.app import App
from api.http.asgi import Response
from api.http.health import HealthView
from api.root.engine import Engine, run_engine
from engine.config import settings_from_mapping
from engine.errors import find_escalation
from engine.histogram import Histogram
from engine.mailbox import Mailbox, OverflowPolicy
from engine.messages import Alert
from engine.metric_samples import CallProgress
from engine.ports import free_port
from engine.simulator.caller import CallerConfig, place_call
from tests.helpers import (
    ADMIN_TOKEN,
    PUBLIC_URL,
    TWILIO_AUTH_TOKEN,
    engine_settings,
    http_request,
    running_engine,
    sid,
)
from tests.test_simulated_caller import final_rows
from tests.test_store_outage import Server
from tests.test_twilio_webhooks import ANSWERED, ELSEWHERE, call, setup_project, twilio_post


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text, by name and sorted labels."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_match_a_scripted_set_of_calls(fresh_database: str, tmp_path: Path) -> None:
    async with running_engine(fresh_database, tmp_path, MEDIA_PORT="0") as engine:
        base = engine.bound_urls[0]
        await setup_project(engine)
        config = CallerConfig(base, PUBLIC_URL, TWILIO_AUTH_TOKEN, ANSWERED)
        with trio.fail_after(60):
            for _ in range(2):
                await place_call(config, "quick")
            # Its Vapi number, with Vapi not configured: the on-call fallback, a missed call.
            patched = await http_request(
                "PATCH", f"{base}/admin/projects/smith-plumbing",
                json={"vapiFallback": "on_call"}, token=ADMIN_TOKEN,
            )  # fmt: skip
            assert patched.status == 200
            await twilio_post(engine, "/twilio/voice", call(sid(500), ELSEWHERE))
            await final_rows(fresh_database, expected=2)
            unauthorized = await http_request("GET", f"{base}/metrics")
            while True:  # the metrics actor folds asynchronously: poll briefly
                response = await http_request("GET", f"{base}/metrics", token=ADMIN_TOKEN)
                found = samples(response.body.decode())
                completed = (("project", "smith-plumbing"), ("status", "completed"))
                if found.get(("afterhours_calls_total", completed)) == 2:
                    break
                await trio.sleep(0.05)
            stats = await http_request("GET", f"{base}/stats", token=ADMIN_TOKEN)
    assert unauthorized.status == 401
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert found[("afterhours_calls_started_total", (("project", "smith-plumbing"),))] == 2
    missed = (("project", "smith-plumbing"), ("status", "missed"))  # its vapi number
    assert found[("afterhours_calls_total", missed)] == 1
    assert found[("afterhours_time_to_first_audio_seconds_count", ())] == 2
    to_model = (("direction", "to_model"),)
    assert found[("afterhours_forwarding_latency_seconds_count", to_model)] > 20  # frames
    assert found[("afterhours_turn_latency_seconds_count", ())] >= 2  # each call's answer
    assert found[("afterhours_model_connections_total", (("outcome", "ok"),))] >= 2
    assert found[("afterhours_calls_active", ())] == 0
    assert found[("afterhours_database_up", ())] == 1
    webhook_ok = (("code", "200"), ("route", "/twilio"))
    assert found[("afterhours_http_requests_total", webhook_ok)] >= 3  # 3 calls answered
    assert ("afterhours_mailbox_dropped_total", (("mailbox", "metrics"),)) in found
    assert stats.status == 200
    body = stats.json()
    assert {box["name"] for box in body["mailboxes"]} >= {"store", "metrics", "alerts"}
    assert body["calls"]["completedTotal"] == 2
    assert body["admission"] == "accepting"


async def test_detailed_health_is_unhealthy_while_postgres_is_down(
    aio_loop: None, base_dir: Path, tmp_path: Path
) -> None:
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            server = Server(nursery, base_dir / "postgres", free_port())
            dsn = await server.start()
            async with running_engine(dsn, tmp_path) as engine:
                url = f"{engine.bound_urls[0]}/health/detailed"
                healthy = await http_request("GET", url)
                await server.stop()
                down = await http_request("GET", url)
                down_for_admin = await http_request("GET", url, token=ADMIN_TOKEN)
                down_wrong_token = await http_request("GET", url, token="wrong" * 8)
                await server.start()
                while (again := await http_request("GET", url)).status != 200:  # noqa: ASYNC110
                    await trio.sleep(0.1)
            await server.stop()
    body = healthy.json()
    assert (healthy.status, body["status"]) == (200, "healthy")
    services = body["services"]
    assert services["database"]["status"] == "up"
    assert services["database"]["latency"] >= 0
    assert services["openai"] == {"status": "simulated"}
    assert services["twilio"] == {"status": "not_configured"}
    assert services["server"]["memoryUsage"]["rssBytes"] > 0
    assert TWILIO_AUTH_TOKEN not in healthy.body.decode()
    assert ADMIN_TOKEN not in healthy.body.decode()
    assert (down.status, down.json()["status"]) == (503, "unhealthy")
    down_database = down.json()["services"]["database"]
    assert (down_database["status"], down_database["spooledRecords"]) == ("down", 0)
    assert down_database["writes"]["lost"] == 0
    # Without the admin token no field names the database's host, port or name.
    database = urlsplit(dsn)
    named = re.compile(  # the port as a whole number, the host, the database's name
        rf"(?<![0-9]){database.port}(?![0-9])|{re.escape(database.hostname or '-')}"
        rf"|{re.escape(database.path.strip('/') or '-')}"
    )
    for shown in (healthy, down, down_wrong_token):
        assert named.search(shown.body.decode()) is None, shown.body
    assert down_wrong_token.json()["services"]["database"] == down.json()["services"]["database"]
    # The admin token sees why: the store's error text, which names where it connects.
    assert down_for_admin.status == 503
    assert named.search(down_for_admin.json()["services"]["database"]["error"])
    assert again.json()["status"] in ("healthy", "degraded")  # degraded: spool replaying
    assert again.json()["services"]["database"]["status"] == "up"


class Exploding:
    """An admin API with a bug: every request raises."""

    def authorized(self, request: Any) -> bool:
        return True

    def route_templates(self) -> set[tuple[str, str]]:
        return {("GET", "/admin/projects")}

    async def handle(self, request: Any) -> Response:
        raise KeyError("a bug")


async def test_a_failing_handler_answers_500_with_a_request_id_and_an_alert() -> None:
    alerts: Mailbox[Alert] = Mailbox("alerts", 8, OverflowPolicy.DROP_NEWEST)
    app = App(HealthView(lambda: 0), admin=Exploding(), alerts=alerts)  # type: ignore[arg-type]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/admin/projects", "query_string": b"",
             "headers": []}  # fmt: skip
    await app(scope, receive, send)
    await app({**scope, "path": "/health"}, receive, send)  # the app still answers
    statuses = [m["status"] for m in sent if m["type"] == "http.response.start"]
    bodies = [m["body"] for m in sent if m["type"] == "http.response.body"]
    (alert,) = alerts.drain_nowait()
    assert statuses == [500, 200]
    assert b"internal error; request id" in bodies[0]
    assert alert.type == "apiError"
    assert alert.metadata["requestId"] in bodies[0].decode()
    # The same id in the response's header (and the access log line: test_ops_metrics.py).
    first = next(m for m in sent if m["type"] == "http.response.start")
    assert (b"x-request-id", alert.metadata["requestId"].encode()) in first["headers"]
    assert app.request_counts() == {("/admin", 500): 1, ("/health", 200): 1}


async def test_a_crashing_service_actor_is_restarted_and_a_critical_alert_says_so(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        base = engine.bound_urls[0]
        # A sample the aggregator cannot fold (histograms with other buckets): it raises.
        bad = CallProgress("acme", Histogram((1.0,)), Histogram((1.0,)), Histogram((1.0,)), 0)
        engine.mailboxes["metrics"].send_nowait(bad)
        with trio.fail_after(20):
            while True:
                stats = (await http_request("GET", f"{base}/stats", token=ADMIN_TOKEN)).json()
                metrics_child = next(
                    c for c in stats["supervisor"]["children"] if c["id"] == "metrics"
                )
                if metrics_child["restartCount"] == 1 and metrics_child["running"]:
                    break
                await trio.sleep(0.05)
            rows = await event_log_rows(fresh_database)
            health = await http_request("GET", f"{base}/health")
    assert ("critical", "actorCrashed") in [(r["level"], r["type"]) for r in rows]
    crash = next(r for r in rows if r["type"] == "actorCrashed")
    assert "afterhours/metrics crashed" in crash["message"]
    assert "histograms with different buckets" in crash["message"]
    assert health.status == 200  # the engine carried on


async def event_log_rows(dsn: str) -> list[dict[str, Any]]:
    with trio.fail_after(10):
        while True:
            async with open_database(dsn, connect_timeout_s=5) as db:
                rows = await db.fetch("SELECT level, type, message FROM event_log", timeout_s=5)
            if any(row["type"] == "actorCrashed" for row in rows):
                return [dict(row) for row in rows]
            await trio.sleep(0.05)


async def test_crashes_beyond_the_intensity_stop_the_engine_after_flushing_alerts(
    fresh_database: str, tmp_path: Path
) -> None:
    settings = settings_from_mapping(engine_settings(fresh_database, tmp_path))
    bad = CallProgress("acme", Histogram((1.0,)), Histogram((1.0,)), Histogram((1.0,)), 0)
    escalation = None
    with trio.fail_after(60):
        try:
            async with trio.open_nursery() as nursery:
                engine: Engine = await nursery.start(run_engine, settings)
                for _ in range(4):  # 1 crash + 3 restarts within 60 s, then the 4th: too many
                    engine.mailboxes["metrics"].send_nowait(bad)
                await trio.sleep_forever()  # the engine ends itself
        except BaseException as exc:  # noqa: BLE001 -- the escalation, as the CLI sees it
            escalation = find_escalation(exc)
    assert escalation is not None  # the CLI exits 3 on this: the process manager restarts it
    rows = await event_log_rows(fresh_database)
    kinds = [(r["level"], r["type"]) for r in rows]
    assert kinds.count(("critical", "actorCrashed")) >= 1  # folded after the first
    assert ("critical", "supervisorEscalated") in kinds  # written before the store stopped
