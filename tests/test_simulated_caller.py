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
from engine.ports import free_port
from engine.simulator.caller import CallerConfig, CallSummary, place_call
from tests.helpers import (
    ADMIN_TOKEN,
    PUBLIC_URL,
    TWILIO_AUTH_TOKEN,
    http_request,
    running_engine,
)
from tests.test_twilio_webhooks import ANSWERED, setup_project

ROOT = Path(__file__).parents[1]


CONCURRENT_CALLS = 20


async def test_twenty_concurrent_calls_are_isolated_and_all_recorded(
    fresh_database: str, tmp_path: Path
) -> None:
    """Twenty calls at once, each to its own business: every record is final and holds
    only its own conversation (the greeting names the business that was called)."""
    async with running_engine(fresh_database, tmp_path, MEDIA_PORT="0") as engine:
        admin = engine.bound_urls[0] + "/admin/projects"
        numbers: dict[str, str] = {}
        for n in range(CONCURRENT_CALLS):
            number, project = f"+1555020{n:04d}", f"business-{n}"
            project_body = {"id": project, "name": f"Business {n}", "timezone": "UTC"}
            created = await http_request("POST", admin, json=project_body, token=ADMIN_TOKEN)
            assert created.status == 201, created.body
            added = await http_request(
                "POST", f"{admin}/{project}/phone-numbers", json={"number": number},
                token=ADMIN_TOKEN,
            )  # fmt: skip
            assert added.status == 201, added.body
            numbers[number] = f"Business {n}"
        summaries: dict[str, CallSummary] = {}

        async def one(number: str) -> None:
            config = CallerConfig(engine.bound_urls[0], PUBLIC_URL, TWILIO_AUTH_TOKEN, number)
            summaries[number] = await place_call(config, "quick")

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for number in numbers:
                    nursery.start_soon(one, number)
            rows = await final_rows(fresh_database, expected=CONCURRENT_CALLS)
        assert engine.simulated_model is not None
        model_stats = engine.simulated_model.statistics()
    assert model_stats.sessions_open == 0
    assert model_stats.violations_total == 0
    by_sid = {r["call_sid"]: r for r in rows}
    assert set(by_sid) == {s.call_sid for s in summaries.values()}
    for number, summary in summaries.items():
        assert summary.twiml_ok
        assert summary.error is None
        assert summary.heard_ms > 0
        assert summary.ended_by == "caller"
        row = by_sid[summary.call_sid]
        assert (row["status"], row["twilio_status"]) == ("completed", "completed")
        transcript = json.loads(row["transcript"])
        assert [t["role"] for t in transcript] == ["assistant", "caller", "assistant"]
        greeting = f"Thank you for calling {numbers[number]}. How can I help?"
        if transcript[0].get("interrupted"):  # the caller spoke before it finished playing
            assert greeting.startswith(transcript[0]["text"])
        else:
            assert transcript[0]["text"] == greeting


async def test_the_simulate_command_prints_a_line_per_call(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path, MEDIA_PORT="0") as engine:
        await setup_project(engine)
        env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
        env |= {"TWILIO_AUTH_TOKEN": TWILIO_AUTH_TOKEN, "ADMIN_TOKEN": ADMIN_TOKEN,
                "PUBLIC_URL": PUBLIC_URL,
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
    assert lines[-1] == "2 of 2 calls connected; 2 records final"
    calls = [line for line in lines if line.startswith("CA")]
    assert len(calls) == 2
    assert all("completed (caller_hung_up)" in line for line in calls)
    assert all("ended by caller" in line for line in calls)
    assert sum(line.strip().startswith("assistant:") for line in lines) >= 2


async def test_the_simulate_command_serves_twilio_and_prints_a_transfer(
    fresh_database: str, tmp_path: Path
) -> None:
    """No TWILIO_ACCOUNT_SID: the engine's transfer goes to the simulated Twilio the
    command serves, which ends the call's stream; the command says where it went."""
    rest_url = f"http://127.0.0.1:{free_port()}"
    async with running_engine(
        fresh_database, tmp_path, MEDIA_PORT="0", TWILIO_API_BASE_URL=rest_url
    ) as engine:
        url = engine.bound_urls[0]
        await create_project(url, EMERGENCY_PROJECT, "+15557654321")
        env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
        env |= {"TWILIO_AUTH_TOKEN": TWILIO_AUTH_TOKEN, "ADMIN_TOKEN": ADMIN_TOKEN,
                "PUBLIC_URL": PUBLIC_URL, "TWILIO_API_BASE_URL": rest_url,
                "PYTHONPATH": str(ROOT)}  # fmt: skip
        command = [sys.executable, "-m", "api.cli", "call", "--to", "+15557654321",
                   "--url", url]  # fmt: skip
        with trio.fail_after(60):
            done = await trio.run_process(
                command, env=env, cwd=tmp_path, capture_stdout=True, capture_stderr=True,
                stdin=subprocess.DEVNULL, check=False,
            )  # fmt: skip
    lines = done.stdout.decode().splitlines()
    assert done.returncode == 0, done.stderr.decode()
    assert lines[-1] == "1 of 1 calls connected; 1 records final"
    (call,) = [line for line in lines if line.startswith("CA")]
    assert "completed (transferred), intent emergency" in call
    assert call.endswith("ended by twilio: transferred to +15551234567")


async def test_the_call_command_serves_vapi_for_a_number_on_vapi(
    fresh_database: str, tmp_path: Path
) -> None:
    """No VAPI_API_KEY, the built-in simulators: the engine creates the call at the
    simulated Vapi the command serves (keys derived from TWILIO_AUTH_TOKEN), whose TwiML
    takes the caller into its stream and whose report completes the record."""
    vapi_url = f"http://127.0.0.1:{free_port()}"
    async with running_engine(
        fresh_database, tmp_path, MEDIA_PORT="0", VAPI_API_BASE_URL=vapi_url
    ) as engine:
        url = engine.bound_urls[0]
        created = await http_request(
            "POST", f"{url}/admin/projects", json=EMERGENCY_PROJECT, token=ADMIN_TOKEN
        )
        assert created.status == 201
        number = {"number": "+15557654321", "system": "vapi", "vapiPhoneNumberId": "pn-1"}
        added = await http_request(
            "POST", f"{url}/admin/projects/smith-plumbing/phone-numbers", json=number,
            token=ADMIN_TOKEN,
        )  # fmt: skip
        assert added.status == 201
        env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
        env |= {"TWILIO_AUTH_TOKEN": TWILIO_AUTH_TOKEN, "ADMIN_TOKEN": ADMIN_TOKEN,
                "PUBLIC_URL": PUBLIC_URL, "VAPI_API_BASE_URL": vapi_url,
                "PYTHONPATH": str(ROOT)}  # fmt: skip
        command = [sys.executable, "-m", "api.cli", "call", "--to", "+15557654321", "--script",
                   "quick", "--url", url]  # fmt: skip
        with trio.fail_after(60):
            done = await trio.run_process(
                command, env=env, cwd=tmp_path, capture_stdout=True, capture_stderr=True,
                stdin=subprocess.DEVNULL, check=False,
            )  # fmt: skip
        async with open_database(fresh_database, connect_timeout_s=5) as db:
            (row,) = await db.fetch("SELECT * FROM calls", timeout_s=5)
    lines = done.stdout.decode().splitlines()
    assert done.returncode == 0, done.stderr.decode()
    assert lines[-1] == "1 of 1 calls connected; 1 records final"
    (call,) = [line for line in lines if line.startswith("CA")]
    assert "completed" in call
    assert "(customer-ended-call)" in call
    assert any("assistant: Thanks for calling" in line for line in lines)
    assert (row["system"], row["vapi_fallback"]) == ("vapi", None)
    assert row["cost_usd"] > 0


EMERGENCY_PROJECT = {
    "id": "smith-plumbing",
    "name": "Smith Plumbing",
    "timezone": "America/Chicago",
    "instructions": "Handle after-hours calls. [scenario: emergency]",
    "onCallNumber": "+15551234567",
}


async def create_project(url: str, project: dict[str, str], number: str) -> None:
    admin = f"{url}/admin/projects"
    created = await http_request("POST", admin, json=project, token=ADMIN_TOKEN)
    assert created.status == 201, created.body
    added = await http_request(
        "POST", f"{admin}/{project['id']}/phone-numbers", json={"number": number},
        token=ADMIN_TOKEN,
    )  # fmt: skip
    assert added.status == 201, added.body


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
