"""The dashboard in a real browser: headless Chromium (the Debian package, driven by
Playwright's Python package with ``executable_path``; Playwright never downloads a
browser) loads ``/dashboard`` from an engine that has answered a simulated call (whose
business function failed) and holds a call Vapi answered, written through the engine's
store as Vapi's report writes it. Signed in with the admin token it shows both systems
side by side, moves a number between them (the next call to it is answered by the new
system), adds, moves and releases another, pages through the calls, opens a call with
its function calls and a caller's markup shown as text; at phone width nothing scrolls
sideways; a project's key sees the numbers read-only. No console errors; a screenshot is
saved (``AFTERHOURS_DASHBOARD_SCREENSHOT`` names where; docs/dashboard.png is one)."""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import trio

from actors.store.db import open_database
from engine.messages import CallUpdated, StoreWrite
from engine.simulator.caller import CallerConfig, place_call
from tests.dashboard_browser import CHROMIUM
from tests.function_backend import FunctionBackend
from tests.helpers import (
    ADMIN_TOKEN,
    PUBLIC_URL,
    TWILIO_AUTH_TOKEN,
    http_request,
    running_engine,
    sid,
    wait_until,
)
from tests.test_call_e2e import BOOKING_PROJECT
from tests.test_simulated_caller import final_rows
from tests.test_twilio_webhooks import ANSWERED, ELSEWHERE, call, twilio_post

ADDED = "+15550004444"
QUIET = "westside-heating"  # listed after smith-plumbing: the admin lands on smith's page
CALLER_MARKUP = '<img src=x onerror="window.__xss=1">'
VAPI_SID = sid(7001)
OLDER = [sid(7100 + n) for n in range(12)]  # before the 30-day window: for paging only


def vapi_call(now: datetime) -> list[StoreWrite]:
    """A call Vapi answered: its start as the webhook records it, then its report."""
    started = now - timedelta(minutes=3)
    return [
        CallUpdated(
            VAPI_SID,
            source="vapi",
            project_id="smith-plumbing",
            system="vapi",
            from_number="+15550100001",
            to_number=ELSEWHERE,
            status="active",
            started_at=started,
            vapi_call_id="vapi-call-1",
        ),
        CallUpdated(
            VAPI_SID,
            source="vapi",
            status="completed",
            end_reason="customer-ended-call",
            ended_at=started + timedelta(seconds=150),
            duration_s=150.0,
            cost_usd=0.25,
            summary="A dripping tap; booked for Tuesday.",
            transcript=[
                {"role": "assistant", "text": "Smith Plumbing, how can I help?"},
                {"role": "caller", "text": CALLER_MARKUP},
            ],
        ),
    ]


def older_calls(now: datetime) -> list[StoreWrite]:
    writes: list[StoreWrite] = []
    for n, call_sid in enumerate(OLDER):
        started = now - timedelta(days=40 + n)
        writes.append(CallUpdated(call_sid, project_id="smith-plumbing", system="openai",
                                  status="active", started_at=started))  # fmt: skip
        writes.append(CallUpdated(call_sid, status="completed", duration_s=30.0, cost_usd=0.03,
                                  end_reason="caller_hung_up"))  # fmt: skip
    return writes


async def setup(base: str, function_url: str) -> str:
    """smith-plumbing (a function that fails, one number on each system), a quiet
    project; returns a key for smith-plumbing."""
    project = BOOKING_PROJECT | {"function_url": function_url, "on_call_number": "+15551234567"}
    for body in (project, {"id": QUIET, "name": "Westside Heating", "timezone": "UTC"}):
        created = await http_request("POST", f"{base}/admin/projects", json=body, token=ADMIN_TOKEN)
        assert created.status == 201, created.body
    for number, system in ((ANSWERED, "openai"), (ELSEWHERE, "vapi")):
        added = await http_request(
            "POST", f"{base}/admin/projects/smith-plumbing/phone-numbers",
            json={"number": number, "system": system, "vapi_phone_number_id": "pn-1"},
            token=ADMIN_TOKEN,
        )  # fmt: skip
        assert added.status == 201, added.body
    created = await http_request(
        "POST", f"{base}/admin/projects/smith-plumbing/api-keys", json={"name": "dash"},
        token=ADMIN_TOKEN,
    )  # fmt: skip
    return str(created.json()["key"])


def usd(value: float) -> str:
    """As the page writes money."""
    return f"${value:.4f}" if value < 1 else f"${value:.2f}"


def local_time(iso: str, timezone: str) -> str:
    return datetime.fromisoformat(iso).astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M:%S")


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed")
async def test_the_dashboard_manages_numbers_and_compares_the_two_systems(
    fresh_database: str, tmp_path: Path
) -> None:
    screenshot = Path(os.environ.get("AFTERHOURS_DASHBOARD_SCREENSHOT", tmp_path / "dash.png"))
    backend = FunctionBackend({"get_slots": (500, b'{"error": "calendar down"}', 0.0)})
    async with trio.open_nursery() as nursery:
        function_url = await nursery.start(backend.serve)
        async with running_engine(
            fresh_database, tmp_path, MEDIA_PORT="0", COMPARISON_RATE_PER_MIN_USD="0.12"
        ) as engine:
            base = engine.bound_urls[0]
            key = await setup(base, function_url)
            config = CallerConfig(base, PUBLIC_URL, TWILIO_AUTH_TOKEN, ANSWERED)
            with trio.fail_after(60):
                answered = await place_call(config, "quick")  # the model calls get_slots
                await final_rows(fresh_database, expected=1)
                now = datetime.now(UTC)
                for write in [*vapi_call(now), *older_calls(now)]:
                    await engine.mailboxes["store"].send(write)
                await wait_until(lambda: ended_calls(fresh_database, 14), timeout_s=10)
            analytics = f"{base}/analytics/project/smith-plumbing"
            summary = await http_request("GET", analytics, token=key)
            recent = await http_request("GET", f"{analytics}/recent?limit=2", token=key)
            browser = {
                "url": base, "admin": ADMIN_TOKEN, "key": key, "project": "smith-plumbing",
                "quiet_project": QUIET, "openai_sid": answered.call_sid, "vapi_sid": VAPI_SID,
                "moved": ELSEWHERE, "kept": ANSWERED, "added": ADDED,
                "screenshot": str(screenshot),
            }  # fmt: skip
            # Its own process: Playwright's event loop cannot share ours (trio-asyncio).
            done = await trio.run_process(
                [sys.executable, "-m", "tests.dashboard_browser", json.dumps(browser)],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                cwd=Path(__file__).parents[1],
            )
            assert done.returncode == 0, done.stderr.decode()
            numbers = await http_request("GET", f"{base}/admin/phone-numbers", token=ADMIN_TOKEN)
            # The number moved back here: its next call is answered by this engine.
            next_call = await twilio_post(engine, "/twilio/voice", call(sid(7200), ELSEWHERE))
        nursery.cancel_scope.cancel()
    shown = json.loads(done.stdout)
    assert shown["errors"] == []
    check_admin_view(shown["admin"], summary.json(), recent.json(), answered.call_sid)
    assert {n["number"]: n["system"] for n in numbers.json()["phone_numbers"]} == {
        ANSWERED: "openai", ELSEWHERE: "openai"
    }  # fmt: skip
    assert re.search(r"<Connect><Stream url=", next_call.body.decode())
    phone = shown["phone"]
    assert phone["widths"]["page"] <= phone["widths"]["view"] <= 375  # no sideways scroll
    assert phone["dialog_right"] <= 375
    keyed = shown["key"]
    assert keyed["numbers"] == [
        f"{ELSEWHERE}\tthis engine (OpenAI Realtime)", f"{ANSWERED}\tthis engine (OpenAI Realtime)"
    ]  # fmt: skip
    assert (keyed["buttons"], keyed["add_form_visible"], keyed["project_choice_visible"]) == (
        0, False, False
    )  # fmt: skip
    assert [f.split("\t")[0] for f in keyed["call"]["functions"]] == ["get_slots"]
    assert screenshot.stat().st_size > 10_000


async def ended_calls(dsn: str, count: int) -> bool:
    async with open_database(dsn, connect_timeout_s=5) as db:
        ended = await db.fetchval(
            "SELECT count(*) FROM calls WHERE status <> 'active'", timeout_s=5
        )
    return bool(ended == count)


def check_admin_view(
    admin: dict[str, Any], summary: dict[str, Any], recent: dict[str, Any], openai_sid: str
) -> None:
    here, vapi = summary["bySystem"]["openai"], summary["bySystem"]["vapi"]
    assert (here["calls"], vapi["calls"]) == (1, 1)  # one call on each system in 30 days
    assert admin["comparison"] == [
        "calls\t1\t1",
        "completed / missed / failed\t1 / 0 / 0\t1 / 0 / 0",
        f"minutes\t{here['minutes']:g}\t2.5",
        f"cost\t{usd(here['costUsd'])}\t$0.2500",
        f"cost per minute\t{usd(here['costPerMinuteUsd'])} / min\t$0.1000 / min",
        f"average duration\t{here['averageDurationS']:g} s\t150 s",
    ]
    assert "measured" in admin["comparison_note"]
    assert "configured" not in " ".join(admin["comparison"])
    assert (admin["function_failure_rate"], admin["function_failures"]) == (
        "100.0 %", "function calls failed (1 of 1)"
    )  # fmt: skip
    assert admin["period_calls"] == str(summary["totalCalls"]) == "2"
    assert admin["bars"] == 30  # a Vapi bar per day of the last 30
    assert admin["started_header"] == "started (America/Chicago)"
    assert [row.split("\t")[:3] for row in admin["numbers_before"]] == [
        [ELSEWHERE, "Vapi", "pn-1"], [ANSWERED, "this engine (OpenAI Realtime)", "pn-1"]
    ]  # fmt: skip
    assert "this engine (OpenAI Realtime)" in admin["kept_after_cancel"]  # cancelled: unchanged
    assert admin["moved_asked"] == {
        "text": f"Move {ELSEWHERE} to this engine (OpenAI Realtime)? Its next call is answered "
        "there.", "asks_vapi_id": False,
    }  # fmt: skip
    assert admin["moved_status"] == f"{ELSEWHERE} is now answered by this engine (OpenAI Realtime)."
    assert "this engine (OpenAI Realtime)" in admin["moved_row"]
    assert admin["added_status"] == f"{ADDED} added, answered by this engine (OpenAI Realtime)."
    asked = admin["added_asked"]
    assert asked["asks_vapi_id"] is True  # it has no Vapi id yet
    assert "Vapi's id for this number is needed" in asked["empty_refused"]
    assert admin["added_to_vapi_status"] == f"{ADDED} is now answered by Vapi."
    assert "pn-new-1" in admin["added_row"]
    assert admin["release_asked"]["text"].startswith(f"Release {ADDED} from smith-plumbing?")
    assert admin["released_status"] == f"{ADDED} released."
    assert [row.split("\t")[0] for row in admin["numbers_after"]] == [ELSEWHERE, ANSWERED]
    pages = admin["pages"]
    assert pages["first"][:2] == [openai_sid, VAPI_SID]  # newest first
    assert pages["first"][2:] == OLDER[:8]
    assert pages["second"] == OLDER[8:]
    assert pages["back"] == pages["first"]
    assert pages["newer_enabled"] is True
    functions = admin["openai_call"]["functions"]
    assert len(functions) == 1
    name, arguments, outcome, http_status, latency, _error = functions[0].split("\t")
    assert (name, outcome, http_status) == ("get_slots", "error", "500")
    assert json.loads(arguments) == {"day": "tomorrow"}
    assert latency.endswith(" ms")
    shown = admin["vapi_call"]
    assert shown["transcript"] == [  # (the roles capitalised by the page's style)
        "Assistant: Smith Plumbing, how can I help?", f"Caller: {CALLER_MARKUP}"
    ]  # fmt: skip
    assert (shown["images"], shown["injected"]) == (0, None)  # shown as text, never markup
    assert shown["summary"] == "A dripping tap; booked for Tuesday."
    assert "Vapi" in shown["facts"]
    assert "customer-ended-call" in shown["facts"]
    assert "$0.2500" in shown["facts"]
    assert shown["functions"] == ["none\t\t\t\t\t"]
    vapi_row = next(c for c in recent["calls"] if c["callSid"] == VAPI_SID)
    assert admin["vapi_started"] == local_time(vapi_row["startedAt"], "America/Chicago")
    quiet = admin["quiet_comparison"]
    assert quiet[0] == "calls\t0\t0"
    assert (
        quiet[4] == "cost per minute\tno ended calls yet\t$0.1200 / min (configured, not measured)"
    )
