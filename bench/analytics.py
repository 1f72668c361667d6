"""The analytics routes on a million calls: p50/p95 per route through the real engine.

Seeds CALLS calls across 50 projects (COPY; the busiest project has a tenth of them,
the rest share the remainder), spread over the last 365 days up to now, with a function
call for every third call, then VACUUM ANALYZE. An engine process (``afterhours
serve``) on that database answers; each route is requested REQUESTS times in a row
(after a warm-up) by one client, and the figures are the engine's wall-clock answer
times seen by the client. The query plans of the three reads are printed (EXPLAIN
ANALYZE) so an index or scan change shows.

    .venv/bin/python -m bench.analytics [--calls 1000000] [--requests 50]
        [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

The run gets a fresh database on that server (dropped afterwards). Prints the figures
and writes bench/results/analytics.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.calls import ADMIN_TOKEN, AUTH_TOKEN, fresh_database
from bench.results_file import add_output_options, results_path
from engine.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
PROJECTS = 50
BUSIEST_SHARE = 0.10
DAYS = 365
SEED = 20261127
# One key may read 5 times a second after a burst of 20 (api/http/analytics.py): requests
# back to back would be refused with 429, so the client paces itself under that.
PACE_S = 0.25
STATUSES = ("completed",) * 80 + ("missed",) * 12 + ("failed",) * 6 + ("active",) * 2
INTENTS = ("routine",) * 70 + ("emergency",) * 15 + ("unknown",) * 15
TRANSCRIPT = json.dumps(
    [
        {"role": "assistant", "text": "Thanks for calling. How can I help?"},
        {"role": "caller", "text": "My water heater is leaking."},
        {"role": "assistant", "text": "I can send someone tomorrow morning."},
    ]
)


def project_ids() -> list[str]:
    return [f"bench-{n:02d}" for n in range(PROJECTS)]


def call_rows(count: int, now: datetime) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    rng = random.Random(SEED)
    projects = project_ids()
    calls, functions = [], []
    for n in range(count):
        busiest = rng.random() < BUSIEST_SHARE
        project = projects[0] if busiest else projects[1 + n % (PROJECTS - 1)]
        started = now - timedelta(seconds=rng.uniform(0, DAYS * 86400))
        status = rng.choice(STATUSES)
        ended = status != "active"
        duration = round(rng.uniform(20, 400), 1) if status == "completed" else 0.0
        sid = f"CA{n:032x}"
        calls.append(
            (
                sid,
                project,
                "+15550100000",
                "+15550200000",
                status,
                rng.choice(INTENTS),
                started,
                started + timedelta(seconds=duration) if ended else None,
                duration if ended else None,
                TRANSCRIPT,
                round(duration / 60 * 0.3, 6) if ended else None,
                int(rng.uniform(150, 900)) if status == "completed" else None,
            )
        )
        if n % 3 == 0:
            outcome = "ok" if rng.random() < 0.9 else "error"
            functions.append(
                (
                    uuid.UUID(int=n),
                    sid,
                    project,
                    "get_slots",
                    outcome,
                    80,
                    started + timedelta(seconds=5),
                )
            )
    return calls, functions


async def seed(dsn: str, count: int, now: datetime) -> float:
    calls, functions = call_rows(count, now)
    connection = await asyncpg.connect(dsn, timeout=30)
    try:
        began = time.perf_counter()
        await connection.copy_records_to_table(
            "calls",
            records=calls,
            columns=[
                "call_sid",
                "project_id",
                "from_number",
                "to_number",
                "status",
                "intent",
                "started_at",
                "ended_at",
                "duration_s",
                "transcript",
                "cost_usd",
                "time_to_first_audio_ms",
            ],
        )
        await connection.copy_records_to_table(
            "function_calls",
            records=functions,
            columns=["id", "call_sid", "project_id", "name", "outcome", "latency_ms", "at"],
        )
        await connection.execute("VACUUM ANALYZE calls")
        await connection.execute("VACUUM ANALYZE function_calls")
        return time.perf_counter() - began
    finally:
        await connection.close()


async def plans(dsn: str, now: datetime) -> dict[str, list[str]]:
    """EXPLAIN ANALYZE of the reads for the busiest project's last 30 days."""
    from actors.store import analytics

    start, end = now - timedelta(days=30), now
    connection = await asyncpg.connect(dsn, timeout=30)
    try:
        out = {}
        for name, sql, args in (
            ("summary", analytics._SUMMARY, ("bench-00", start, end)),
            ("daily", analytics._DAILY, ("bench-00", start, end, "UTC", start.date(), end.date())),
            ("recent", analytics._RECENT, ("bench-00", None, "", 21)),
            ("by_system", analytics._BY_SYSTEM, ("bench-00", start, end)),
            ("daily_by_system", analytics._DAILY_BY_SYSTEM, ("bench-00", start, end, "UTC")),
        ):
            rows = await connection.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args)
            out[name] = [row[0] for row in rows]
        return out
    finally:
        await connection.close()


async def measure(url: str, paths: dict[str, str], requests: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    figures = {}
    async with httpx.AsyncClient(timeout=30, headers=headers) as http:
        for name, path in paths.items():
            for _ in range(3):  # warm-up: plans cached, pages in memory
                await asyncio.sleep(PACE_S)
                (await http.get(url + path)).raise_for_status()
            times_ms = []
            for _ in range(requests):
                await asyncio.sleep(PACE_S)  # not timed
                began = time.perf_counter()
                response = await http.get(url + path)
                times_ms.append((time.perf_counter() - began) * 1000)
                response.raise_for_status()
            times_ms.sort()
            figures[name] = {
                "path": path,
                "p50_ms": round(times_ms[len(times_ms) // 2], 1),
                "p95_ms": round(times_ms[min(len(times_ms) - 1, int(0.95 * len(times_ms)))], 1),
                "max_ms": round(times_ms[-1], 1),
            }
    return figures


async def wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(timeout=1) as http:
        for _ in range(600):
            if process.poll() is not None:
                raise SystemExit(f"engine exited with {process.returncode}")
            try:
                if (await http.get(f"{url}/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("engine not healthy in 60 s")


async def run(dsn: str, count: int, requests: int, workdir: Path) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TWILIO_"))}
    env |= {
        "PYTHONPATH": str(ROOT),
        "PORT": str(port),
        "MEDIA_PORT": "0",
        "DATA_DIR": str(workdir / "data"),
        "DATABASE_URL": dsn,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
    }
    log = (workdir / "engine.log").open("wb")
    engine = subprocess.Popen(  # noqa: ASYNC220 -- a bench harness, not the engine
        [sys.executable, "-m", "api.cli", "serve"],
        env=env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        await wait_healthy(url, engine)
        async with httpx.AsyncClient(timeout=10) as http:
            for project in project_ids():
                body = {"id": project, "name": project, "timezone": "UTC"}
                response = await http.post(
                    f"{url}/admin/projects",
                    json=body,
                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                )
                response.raise_for_status()
        now = datetime.now(UTC)
        seed_s = await seed(dsn, count, now)
        async with httpx.AsyncClient(timeout=30) as http:
            first = await http.get(
                f"{url}/analytics/project/bench-00/recent?limit=100",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
            deep_cursor = first.json()["nextCursor"]
        busiest = "/analytics/project/bench-00"
        figures = await measure(
            url,
            {
                "summary_30_days": busiest,
                "recent_first_page": f"{busiest}/recent?limit=20",
                "recent_next_page": f"{busiest}/recent?limit=100&cursor={deep_cursor}",
                "statistics_30_days": f"{busiest}/statistics",
                "statistics_366_days": f"{busiest}/statistics?start="
                f"{(now - timedelta(days=365)).date()}&end={now.date()}",
                "summary_quiet_project": "/analytics/project/bench-07",
            },
            requests,
        )
        return {"seed_s": round(seed_s, 1), "routes": figures, "plans": await plans(dsn, now)}
    finally:
        engine.send_signal(signal.SIGTERM)
        try:
            engine.wait(timeout=60)
        except subprocess.TimeoutExpired:
            engine.kill()
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    add_output_options(parser)
    args = parser.parse_args()
    results = results_path(args, "analytics")
    workdir = Path(tempfile.mkdtemp(prefix="afterhours-analytics-"))
    workdir.chmod(0o755)
    try:
        with fresh_database(args.database_url) as dsn:
            result = asyncio.run(run(dsn, args.calls, args.requests, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["calls"] = args.calls
    result["busiest_project_calls"] = f"about {BUSIEST_SHARE:.0%}"
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    result["command"] = f"python -m bench.analytics --calls {args.calls} --requests {args.requests}"
    print(json.dumps({k: v for k, v in result.items() if k != "plans"}, indent=2))
    for name, lines in result["plans"].items():
        print(f"\n-- plan: {name}")
        print("\n".join(lines))
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
