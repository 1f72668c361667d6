"""Bulkheads against a real PostgreSQL: a tenant's heavy analytics, a flood of strangers'
keys and one key's runaway script never delay another project's callers, and never
reach the database when they need not."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trio
from prometheus_client.parser import text_string_to_metric_families

from actors.store.db import open_database
from api.root.engine import Engine
from tests.helpers import ADMIN_TOKEN, http_request, running_engine
from tests.test_twilio_webhooks import ANSWERED, call, setup_project, twilio_post

HEAVY_CALLS = 300_000
FLOOD_KEYS = 8
WORKERS_PER_KEY = 4  # the per-key concurrency limit: each key uses all it may
FLOOD_S = 6.0


def call_sid() -> str:
    return "CA" + secrets.token_hex(16)


async def heavy_project(engine: Engine, dsn: str, keys: int) -> list[str]:
    """Project ``heavy`` with a year of calls, and ``keys`` read keys for it."""
    base = engine.bound_urls[0]
    project = {"id": "heavy", "name": "Heavy", "timezone": "America/Chicago"}
    created = await http_request("POST", f"{base}/admin/projects", json=project, token=ADMIN_TOKEN)
    assert created.status == 201
    async with open_database(dsn, connect_timeout_s=5) as db:
        await db.execute(
            "INSERT INTO calls (call_sid, project_id, status, intent, started_at, duration_s,"
            " cost_usd, time_to_first_audio_ms)"
            " SELECT 'CAH' || g, 'heavy', 'completed', 'routine',"
            "  now() - (g % 365) * interval '1 day' - (g % 86400) * interval '1 second',"
            "  60, 0.1, 500 FROM generate_series(1, $1) AS g",
            HEAVY_CALLS,
            timeout_s=60,
        )
        await db.execute("ANALYZE calls", timeout_s=60)
    made = []
    for _ in range(keys):
        key = await http_request(
            "POST", f"{base}/admin/projects/heavy/api-keys", json={}, token=ADMIN_TOKEN
        )
        made.append(key.json()["key"])
    return made


async def metric(engine: Engine, name: str, **labels: str) -> float:
    text = await http_request("GET", f"{engine.bound_urls[0]}/metrics", token=ADMIN_TOKEN)
    for family in text_string_to_metric_families(text.body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


async def test_heavy_analytics_for_one_project_never_delay_another_projects_calls(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        await setup_project(engine)  # smith-plumbing answers ANSWERED
        keys = await heavy_project(engine, fresh_database, FLOOD_KEYS)
        today = datetime.now(UTC).date()
        year = f"start={today - timedelta(days=365)}&end={today}"
        base = f"{engine.bound_urls[0]}/analytics/project/heavy"
        lane = engine.mailboxes["store-queries"]
        outcomes: list[int] = []
        webhook_s: list[float] = []
        answered: list[bool] = []
        most_queued = 0

        async def flood(key: str, worker: int) -> None:
            path = (
                f"{base}/statistics?{year}"
                if worker % 2
                else f"{base}?from={today - timedelta(days=365)}"
            )
            with trio.move_on_after(FLOOD_S):
                while True:
                    outcomes.append((await http_request("GET", path, token=key)).status)

        async def watch_lane() -> None:
            nonlocal most_queued
            while True:
                most_queued = max(most_queued, lane.statistics().queued)
                await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_lane)
            async with trio.open_nursery() as flooding:
                for key in keys:
                    for worker in range(WORKERS_PER_KEY):
                        flooding.start_soon(flood, key, worker)
                await trio.sleep(1.0)  # the lane is full by now
                for _ in range(10):
                    began_s = trio.current_time()
                    twiml = await twilio_post(engine, "/twilio/voice", call(call_sid(), ANSWERED))
                    webhook_s.append(trio.current_time() - began_s)
                    answered.append(b"<Connect><Stream" in twiml.body)
                    await trio.sleep(0.3)
            nursery.cancel_scope.cancel()
    assert most_queued >= 5, f"the flood never filled the read lane ({most_queued} queued)"
    assert 200 in outcomes  # the heavy reads were served, behind their own lane
    assert all(answered), "a caller of another project was turned away"
    assert max(webhook_s) < 1.0, f"webhook times under the flood: {webhook_s}"


async def test_strangers_keys_are_refused_from_memory_without_a_query(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        await setup_project(engine)
        lane = engine.mailboxes["store-queries"]
        accepted_before = lane.statistics().accepted_total
        url = f"{engine.bound_urls[0]}/analytics/project/smith-plumbing"
        statuses: list[int] = []

        async def stranger() -> None:
            key = f"ahk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
            statuses.append((await http_request("GET", url, token=key)).status)

        webhook_s: list[float] = []
        async with trio.open_nursery() as nursery:
            for _ in range(100):
                nursery.start_soon(stranger)
            began_s = trio.current_time()
            twiml = await twilio_post(engine, "/twilio/voice", call(call_sid(), ANSWERED))
            webhook_s.append(trio.current_time() - began_s)
        accepted_after = lane.statistics().accepted_total
        refused = await metric(
            engine, "afterhours_refusals_total", edge="analytics", reason="unknown_key"
        )
    assert statuses == [401] * 100
    assert accepted_after == accepted_before  # not one of them reached the database
    assert refused == 100
    assert b"<Stream" in twiml.body
    assert webhook_s[0] < 1.0


async def test_a_key_past_its_rate_gets_429_with_retry_after(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        await setup_project(engine)
        base = engine.bound_urls[0]
        created = await http_request(
            "POST", f"{base}/admin/projects/smith-plumbing/api-keys", json={}, token=ADMIN_TOKEN
        )
        key = created.json()["key"]
        answers = [
            await http_request("GET", f"{base}/analytics/project/smith-plumbing", token=key)
            for _ in range(30)
        ]
        refused = await metric(
            engine, "afterhours_refusals_total", edge="analytics", reason="key_rate"
        )
    statuses = [answer.status for answer in answers]
    assert statuses[:20] == [200] * 20  # the burst
    limited = [answer for answer in answers if answer.status == 429]
    assert limited, statuses
    assert all(int(answer.headers["retry-after"]) >= 1 for answer in limited)
    assert refused == len(limited)
