"""The simulated caller through the real path, several calls at once, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from actors.store.db import open_database
from engine.config import ENV_NAMES
from engine.simulator.caller import CallerConfig, CallSummary, place_call
from tests.helpers import PUBLIC_URL, TWILIO_AUTH_TOKEN, running_engine
from tests.test_twilio_webhooks import ANSWERED, setup_project

ROOT = Path(__file__).parents[1]


async def test_concurrent_calls_are_isolated_and_all_recorded(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path, MEDIA_PORT="0") as engine:
        await setup_project(engine)
        config = CallerConfig(engine.bound_urls[0], PUBLIC_URL, TWILIO_AUTH_TOKEN, ANSWERED)
        summaries: list[CallSummary] = []

        async def one() -> None:
            summaries.append(await place_call(config, "quick"))

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(one)
            rows = await final_rows(fresh_database, expected=4)
    assert len(summaries) == 4
    for summary in summaries:
        assert summary.twiml_ok
        assert summary.error is None
        assert summary.heard_ms > 0
        assert summary.marks_returned > 0
        assert summary.ended_by == "caller"
    assert {r["call_sid"] for r in rows} == {s.call_sid for s in summaries}
    for row in rows:
        assert (row["status"], row["twilio_status"]) == ("completed", "completed")
        roles = [t["role"] for t in json.loads(row["transcript"])]
        assert roles[:3] == ["assistant", "caller", "assistant"]  # each call its own turns


async def test_the_simulate_command_prints_a_line_per_call(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path, MEDIA_PORT="0") as engine:
        await setup_project(engine)
        env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
        env |= {"TWILIO_AUTH_TOKEN": TWILIO_AUTH_TOKEN, "PUBLIC_URL": PUBLIC_URL,
                "PYTHONPATH": str(ROOT)}  # fmt: skip
        command = [sys.executable, "-m", "api.cli", "simulate", "--calls", "2",
                   "--concurrency", "2", "--to", ANSWERED, "--script", "quick",
                   "--url", engine.bound_urls[0]]  # fmt: skip
        with trio.fail_after(60):
            done = await trio.run_process(
                command, env=env, cwd=tmp_path, capture_stdout=True, capture_stderr=True,
                stdin=subprocess.DEVNULL, check=False,
            )  # fmt: skip
    lines = done.stdout.decode().splitlines()
    assert done.returncode == 0, done.stderr.decode()
    assert lines[-1] == "2 of 2 calls connected"
    assert all("ended by caller" in line for line in lines[:2])


async def final_rows(dsn: str, expected: int) -> list[dict[str, Any]]:
    """The calls once every record is final (the store writes in batches: poll)."""
    while True:
        async with open_database(dsn, connect_timeout_s=5) as db:
            rows = await db.fetch(
                "SELECT call_sid, status, twilio_status, transcript FROM calls", timeout_s=5
            )
        final = [dict(r) for r in rows if r["status"] != "active" and r["twilio_status"]]
        if len(final) == expected:
            return final
        await trio.sleep(0.05)
