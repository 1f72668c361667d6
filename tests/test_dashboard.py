"""The dashboard in a real browser: headless Chromium (the Debian package, driven by
Playwright's Python package with ``executable_path``; Playwright never downloads a
browser) loads ``/dashboard`` from an engine that has answered a simulated call (whose
business function failed) and a call to its Vapi number, handed by the voice webhook to
the simulated Vapi, whose end-of-call report then came to ``/vapi/events``. Signed in
with the admin token it shows both systems side by side, moves a number between them
(the next call to it is answered by the new system), adds, moves and releases another,
pages through the calls, opens a call with its function calls and a caller's markup
shown as text; at phone width nothing scrolls sideways; a project's key sees the numbers
read-only. No console errors; a screenshot is saved (``AFTERHOURS_DASHBOARD_SCREENSHOT``
names where; docs/dashboard.png is one)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import trio

from actors.store.db import open_database
from api.http.dashboard import PAGE
from api.root.engine import Engine
from engine.messages import CallUpdated, StoreWrite
from engine.simulator.caller import CallerConfig, place_call
from tests.dashboard_browser import CHROMIUM
from tests.fixtures import vapi_payloads
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
from tests.test_vapi_calls import post_event, vapi_engine

ADDED = "+15550004444"
QUIET = "westside-heating"  # listed after smith-plumbing: the admin lands on smith's page
CALLER_MARKUP = '<img src=x onerror="window.__xss=1">'
VAPI_SID = sid(7001)
VAPI_CALL_ID = "vapi-call-1"
OLDER = [sid(7100 + n) for n in range(12)]  # before the 30-day window: for paging only


def vapi_report(started: datetime) -> dict[str, Any]:
    """Vapi's end-of-call report for the call it took (VAPI_SID), as Vapi posts it."""
    ended = started + timedelta(seconds=150)
    at_ms = int(started.timestamp() * 1000)
    return vapi_payloads.report(
        call={"id": VAPI_CALL_ID, "phoneCallProviderId": VAPI_SID,
              "metadata": {"callSid": VAPI_SID, "project": "smith-plumbing"}},
        endedReason="customer-ended-call",
        startedAt=started.isoformat().replace("+00:00", "Z"),
        endedAt=ended.isoformat().replace("+00:00", "Z"),
        durationSeconds=150.0,
        cost=0.25,
        analysis={"summary": "A dripping tap; booked for Tuesday."},
        artifact={"messages": [
            {"role": "bot", "message": "Smith Plumbing, how can I help?", "time": at_ms + 900,
             "secondsFromStart": 0.9},
            {"role": "user", "message": CALLER_MARKUP, "time": at_ms + 4000,
             "secondsFromStart": 4.0},
        ]},
    )  # fmt: skip


async def vapi_call(engine: Engine, dsn: str) -> None:
    """A call to the Vapi number, handed to the (simulated) Vapi by the voice webhook,
    and the report Vapi then posts to /vapi/events."""
    taken = await twilio_post(engine, "/twilio/voice", call(VAPI_SID, ELSEWHERE))
    assert "/transport" in taken.body.decode(), taken.body  # Vapi's TwiML, not ours
    await wait_until(lambda: recorded_with_vapi_id(dsn), timeout_s=10)
    reported = await post_event(engine, vapi_report(datetime.now(UTC) - timedelta(minutes=3)))
    assert reported.status == 200, reported.body


async def recorded_with_vapi_id(dsn: str) -> bool:
    """The webhook's record of the Vapi call is written, with Vapi's id for it."""
    async with open_database(dsn, connect_timeout_s=5) as db:
        vapi_id = await db.fetchval(
            "SELECT vapi_call_id FROM calls WHERE call_sid = $1", VAPI_SID, timeout_s=5
        )
    return vapi_id is not None


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
    project = BOOKING_PROJECT | {"functionUrl": function_url, "onCallNumber": "+15551234567"}
    for body in (project, {"id": QUIET, "name": "Westside Heating", "timezone": "UTC"}):
        created = await http_request("POST", f"{base}/admin/projects", json=body, token=ADMIN_TOKEN)
        assert created.status == 201, created.body
    for number, system in ((ANSWERED, "openai"), (ELSEWHERE, "vapi")):
        added = await http_request(
            "POST", f"{base}/admin/projects/smith-plumbing/phone-numbers",
            json={"number": number, "system": system, "vapiPhoneNumberId": "pn-1"},
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
        async with vapi_engine(
            fresh_database, tmp_path, MEDIA_PORT="0", COMPARISON_RATE_PER_MIN_USD="0.12"
        ) as (engine, _vapi):
            base = engine.bound_urls[0]
            key = await setup(base, function_url)
            config = CallerConfig(base, PUBLIC_URL, TWILIO_AUTH_TOKEN, ANSWERED)
            with trio.fail_after(60):
                answered = await place_call(config, "quick")  # the model calls get_slots
                await final_rows(fresh_database, expected=1)
                await vapi_call(engine, fresh_database)
                for write in older_calls(datetime.now(UTC)):
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
    assert {n["number"]: n["system"] for n in numbers.json()["phoneNumbers"]} == {
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


NODE = shutil.which("node")


async def sign_in_form(tmp_path: Path, url: str, token: str, project_id: str) -> dict[str, Any]:
    """The page's sign-in form, filled and submitted, in Node against the real engine
    (tests/dashboard_signin.js): what it says, and what it asked the engine."""
    (script,) = re.findall(rb"<script>(.*?)</script>", PAGE, flags=re.DOTALL)
    served = tmp_path / "dashboard.js"
    served.write_bytes(script)
    harness = Path(__file__).parent / "dashboard_signin.js"
    with trio.fail_after(30):
        done = await trio.run_process(
            [NODE or "node", str(harness), str(served), url, token, project_id],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()
    shown: dict[str, Any] = json.loads(done.stdout)
    return shown


@pytest.mark.skipif(NODE is None, reason="node is not installed")
async def test_a_project_key_without_its_project_id_is_told_what_is_missing(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        url = engine.bound_urls[0]
        key = await setup(url, "http://127.0.0.1:9/functions")
        key_alone = await sign_in_form(tmp_path, url, key, "")
        wrong_admin = await sign_in_form(tmp_path, url, "x" * 32, "")
        with_project = await sign_in_form(tmp_path, url, key, "smith-plumbing")
    # Nothing is sent: the form says what is missing, not "wrong admin token".
    assert key_alone == {
        "error": "This is a project's API key: enter its project id too "
        "(or sign in with the admin token).",
        "requests": [],
        "signedIn": False,
    }
    # A token that is no project key is still the admin token, refused by the engine.
    assert wrong_admin["error"].startswith("Sign-in failed: missing or wrong admin token")
    assert wrong_admin["requests"] == ["/admin/projects"]
    # The same key with its project id goes to the analytics API (the stand-in DOM draws
    # no dashboard, so only the first request is checked).
    assert with_project["requests"][0].startswith("/analytics/project/smith-plumbing")
    assert "admin" not in " ".join(with_project["requests"])
