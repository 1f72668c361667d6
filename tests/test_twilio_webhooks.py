"""Twilio's webhooks over real HTTP against a real PostgreSQL: signatures, routing,
TwiML, missed calls with their reasons, and the status callback."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from twilio.request_validator import RequestValidator

from actors.store.db import open_database
from api.root.engine import Engine
from engine.lifecycle import StopSignal
from engine.stream_tokens import check_token
from tests.helpers import (
    ADMIN_TOKEN,
    PUBLIC_URL,
    TWILIO_AUTH_TOKEN,
    HttpResponse,
    http_request,
    running_engine,
    sid,
)

PROJECT: dict[str, Any] = {
    "id": "smith-plumbing",
    "name": "Smith Plumbing",
    "timezone": "America/Chicago",
    "onCallNumber": "+15551234567",
}
ANSWERED, ELSEWHERE = "+15557654321", "+15550009999"


def signed(path: str, params: dict[str, str], token: str = TWILIO_AUTH_TOKEN) -> dict[str, str]:
    signature = RequestValidator(token).compute_signature(PUBLIC_URL + path, params)
    return {"X-Twilio-Signature": signature}


async def twilio_post(engine: Engine, path: str, params: dict[str, str], **kw: Any) -> HttpResponse:
    headers = kw.pop("headers", None)
    return await http_request(
        "POST", engine.bound_urls[0] + path, form=params,
        headers=signed(path, params) if headers is None else headers,
    )  # fmt: skip


def call(sid: str, to: str) -> dict[str, str]:
    return {
        "CallSid": sid, "AccountSid": "AC" + "0" * 32, "From": "+15550001111", "To": to,
        "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01",
    }  # fmt: skip


async def setup_project(engine: Engine) -> None:
    base = engine.bound_urls[0] + "/admin/projects"
    assert (await http_request("POST", base, json=PROJECT, token=ADMIN_TOKEN)).status == 201
    for number, system in ((ANSWERED, "openai"), (ELSEWHERE, "vapi")):
        added = await http_request(
            "POST", f"{base}/smith-plumbing/phone-numbers",
            json={"number": number, "system": system, "vapiPhoneNumberId": "pn-1"},
            token=ADMIN_TOKEN,
        )  # fmt: skip
        assert added.status == 201


async def call_row(dsn: str, call_sid: str, *, until: str | None = None) -> dict[str, Any]:
    """The call's row, once the store has written it (it batches: poll briefly)."""
    with trio.fail_after(10):
        while True:
            async with open_database(dsn, connect_timeout_s=5) as db:
                rows = await db.fetch(
                    "SELECT * FROM calls WHERE call_sid = $1", call_sid, timeout_s=5
                )
            if rows and (until is None or rows[0]["status"] == until):
                return dict(rows[0])
            await trio.sleep(0.05)


async def test_an_answered_number_gets_a_media_stream_with_a_token(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        await setup_project(engine)
        answer = await twilio_post(engine, "/twilio/voice", call(sid(100), ANSWERED))
        row = await call_row(fresh_database, sid(100))
    assert answer.status == 200
    assert answer.headers["content-type"] == "text/xml"
    xml = answer.body.decode()
    # The media listener's own port, on PUBLIC_URL's host (the per-frame path skips Hypercorn).
    assert re.search(r'<Connect><Stream url="ws://127\.0\.0\.1:\d+/twilio/media">', xml)
    parameters = dict(re.findall(r'<Parameter name="(\w+)" value="([^"]*)" />', xml))
    assert parameters["project"] == "smith-plumbing"
    assert parameters["callSid"] == sid(100)
    check_token(
        TWILIO_AUTH_TOKEN.encode(), parameters["token"], sid(100), "smith-plumbing", time.time()
    )
    assert (row["status"], row["project_id"], row["from_number"], row["to_number"]) == (
        "active", "smith-plumbing", "+15550001111", ANSWERED,
    )  # fmt: skip


async def test_calls_that_cannot_be_answered_are_turned_away_politely_and_recorded(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path, MAX_CONCURRENT_CALLS="1") as engine:
        await setup_project(engine)
        unknown = await twilio_post(engine, "/twilio/voice", call(sid(201), "+15553334444"))
        elsewhere = await twilio_post(engine, "/twilio/voice", call(sid(202), ELSEWHERE))

        async def busy_call(stop: StopSignal, *, task_status: trio.TaskStatus[None]) -> None:
            task_status.started()
            await stop.wait()

        await engine.calls.start_child("CA-busy", busy_call)
        full = await twilio_post(engine, "/twilio/voice", call(sid(203), ANSWERED))
        rows = {
            call_sid: await call_row(fresh_database, call_sid)
            for call_sid in (sid(201), sid(202), sid(203))
        }
    assert "<Say>We're sorry, this number is not in service. Goodbye.</Say><Hangup />" in (
        unknown.body.decode()
    )
    # A number on Vapi with no Vapi configured: its project's fallback, this engine, answers
    # (tests/test_vapi_calls.py has the rest of Vapi's numbers).
    assert "/twilio/media" in elsewhere.body.decode()
    assert "All of our lines are busy right now." in full.body.decode()
    assert "<Dial" in full.body.decode()
    assert {call_sid: (r["status"], r["end_reason"]) for call_sid, r in rows.items()} == {
        sid(201): ("missed", "unknown_number"),
        sid(202): ("active", None),
        sid(203): ("missed", "engine_at_capacity"),
    }
    assert rows[sid(202)]["vapi_fallback"] == "vapi_not_configured"
    assert rows[sid(201)]["project_id"] is None
    assert rows[sid(202)]["project_id"] == "smith-plumbing"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param({"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"}, id="wrong"),
        pytest.param(signed("/twilio/voice", call(sid(300), ANSWERED), "c" * 32), id="other-token"),
    ],
)
async def test_unsigned_webhooks_get_403_and_an_event_log_entry_nothing_else(
    fresh_database: str, tmp_path: Path, headers: dict[str, str]
) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        await setup_project(engine)
        refused = await twilio_post(
            engine, "/twilio/voice", call(sid(300), ANSWERED), headers=headers
        )
        with trio.fail_after(10):
            while True:
                async with open_database(fresh_database, connect_timeout_s=5) as db:
                    logged = await db.fetch(
                        "SELECT type, call_sid FROM event_log WHERE type = 'twilioError'",
                        timeout_s=5,
                    )
                    calls = await db.fetchval("SELECT count(*) FROM calls", timeout_s=5)
                if logged:
                    break
                await trio.sleep(0.05)
    assert refused.status == 403
    assert [tuple(r) for r in logged] == [("twilioError", sid(300))]
    assert calls == 0


@pytest.mark.parametrize(
    ("twilio_status", "expected"),
    [
        pytest.param("completed", "completed", id="completed"),
        pytest.param("no-answer", "missed", id="no-answer"),
        pytest.param("busy", "missed", id="busy"),
        pytest.param("canceled", "missed", id="canceled"),
        pytest.param("failed", "failed", id="failed"),
    ],
)
async def test_the_status_callback_finalises_the_record(
    fresh_database: str, tmp_path: Path, twilio_status: str, expected: str
) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        await setup_project(engine)
        params = call(sid(400), ANSWERED) | {"CallStatus": twilio_status, "CallDuration": "42"}
        answer = await twilio_post(engine, "/twilio/status", params)
        row = await call_row(fresh_database, sid(400), until=expected)
    assert answer.status == 204
    columns = ("status", "status_source", "twilio_status", "twilio_duration_s")
    assert tuple(row[c] for c in columns) == (expected, "twilio", twilio_status, 42)
