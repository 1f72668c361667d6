"""Numbers on Vapi, end to end against a real PostgreSQL and the simulated Vapi on
127.0.0.1: the voice webhook hands the call to Vapi (its TwiML, the simulated caller
following it into Vapi's stream), Vapi's reports complete the record, and when Vapi is
down, slow, erring or unusable the caller is answered all the same."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from actors.store.db import open_database
from api.root.engine import Engine
from engine.simulator.caller import CallerConfig, place_call
from engine.simulator.vapi import SimulatedVapi, VapiFaults
from tests.fixtures import vapi_payloads
from tests.helpers import (
    ADMIN_TOKEN,
    PUBLIC_URL,
    TWILIO_AUTH_TOKEN,
    http_request,
    running_engine,
    sid,
    wait_until,
)
from tests.test_twilio_webhooks import call, call_row, twilio_post

VAPI_KEY = "vapi-test-private-key"
VAPI_SECRET = "vapi-test-server-secret"
VAPI_NUMBER, ENGINE_NUMBER = "+15557654321", "+15557650000"
VAPI_NUMBER_ID = vapi_payloads.PHONE_NUMBER_ID
ON_CALL = "+15551234567"


@asynccontextmanager
async def vapi_engine(
    dsn: str, data_dir: Path, faults: VapiFaults | None = None, **overrides: str
) -> AsyncIterator[tuple[Engine, SimulatedVapi]]:
    """The engine with Vapi configured, pointed at a simulated Vapi that posts its
    reports back to the engine."""
    vapi = SimulatedVapi(VAPI_KEY, VAPI_SECRET, server_url="", faults=faults or VapiFaults())
    async with trio.open_nursery() as nursery:
        base_url = await nursery.start(vapi.serve)
        settings = {
            "VAPI_API_KEY": VAPI_KEY,
            "VAPI_API_BASE_URL": base_url,
            "VAPI_SERVER_SECRET": VAPI_SECRET,
        }
        async with running_engine(dsn, data_dir, **(settings | overrides)) as engine:
            vapi.server_url = engine.bound_urls[0] + "/vapi/events"
            yield engine, vapi
        nursery.cancel_scope.cancel()


async def add_project(engine: Engine, *, fallback: str = "engine", on_call: bool = True) -> None:
    base = engine.bound_urls[0] + "/admin/projects"
    project: dict[str, Any] = {
        "id": "smith-plumbing", "name": "Smith Plumbing", "timezone": "America/Chicago",
        "vapiFallback": fallback,
    }  # fmt: skip
    if on_call:
        project["onCallNumber"] = ON_CALL
    assert (await http_request("POST", base, json=project, token=ADMIN_TOKEN)).status == 201
    await set_number(engine, VAPI_NUMBER, "vapi")
    await set_number(engine, ENGINE_NUMBER, "openai")


async def set_number(engine: Engine, number: str, system: str) -> None:
    body: dict[str, Any] = {"number": number, "system": system}
    if system == "vapi":
        body |= {"vapiPhoneNumberId": VAPI_NUMBER_ID, "vapiAssistantId": "as-1"}
    url = engine.bound_urls[0] + "/admin/projects/smith-plumbing/phone-numbers"
    assert (await http_request("POST", url, json=body, token=ADMIN_TOKEN)).status == 201


async def post_event(
    engine: Engine, payload: object, secret: str | None = VAPI_SECRET, **kw: Any
) -> Any:
    headers = {} if secret is None else {"x-vapi-secret": secret}
    return await http_request(
        "POST", engine.bound_urls[0] + "/vapi/events", json=payload, headers=headers, **kw
    )


async def rows(dsn: str, sql: str, *args: object) -> list[dict[str, Any]]:
    async with open_database(dsn, connect_timeout_s=5) as db:
        return [dict(r) for r in await db.fetch(sql, *args, timeout_s=5)]


async def test_a_vapi_number_is_answered_by_vapi_and_its_report_completes_the_record(
    fresh_database: str, tmp_path: Path
) -> None:
    # Vapi may deliver a report twice: one record all the same.
    async with vapi_engine(fresh_database, tmp_path, VapiFaults(duplicate_reports=True)) as (
        engine,
        vapi,
    ):
        await add_project(engine)
        config = CallerConfig(engine.bound_urls[0], PUBLIC_URL, TWILIO_AUTH_TOKEN, VAPI_NUMBER)
        summary = await place_call(config, "quick")
        reports = await wait_until(lambda: _deliveries(vapi, "end-of-call-report", 2), timeout_s=10)
        row = await wait_until(lambda: _reported(fresh_database, summary.call_sid), timeout_s=10)
        same_call = await rows(
            fresh_database,
            "SELECT call_sid FROM calls WHERE vapi_call_id = $1",
            row["vapi_call_id"],
        )
    (created,) = vapi.requests
    assert created.status == 201
    assert created.body is not None
    assert created.body["phoneNumberId"] == VAPI_NUMBER_ID
    assert created.body["assistantId"] == "as-1"
    assert created.body["customer"] == {"number": "+15550100000"}
    assert created.body["metadata"] == {"callSid": summary.call_sid, "project": "smith-plumbing"}
    # The caller followed Vapi's TwiML into Vapi's stream and heard its assistant.
    assert summary.error is None
    assert summary.twiml_ok
    assert summary.heard_ms > 1000
    (vapi_call,) = vapi.calls.values()
    assert vapi_call.call_sid == summary.call_sid
    assert vapi_call.marks_returned >= 1  # the greeting, played (as Twilio returns marks)
    assert [d.status for d in reports] == [200, 200]
    assert len(same_call) == 1
    assert (row["system"], row["status_source"], row["vapi_call_id"]) == (
        "vapi", "vapi", vapi_call.id,
    )  # fmt: skip
    assert (row["project_id"], row["to_number"], row["from_number"]) == (
        "smith-plumbing", VAPI_NUMBER, "+15550100000",
    )  # fmt: skip
    assert row["engine_instance"] is None  # Vapi holds it: no lease of ours covers it
    assert row["end_reason"] == "customer-ended-call"
    assert row["duration_s"] > 2
    assert float(row["cost_usd"]) > 0
    assert row["summary"].startswith("Simulated call")
    assert row["twilio_status"] == "completed"  # Twilio's callback filled in its part
    transcript = _decode(row["transcript"])
    assert transcript[0]["role"] == "assistant"
    assert transcript[0]["text"].startswith("Thanks for calling")
    assert any(turn["role"] == "caller" for turn in transcript)
    assert _decode(row["usage"])["cost_breakdown"]["total"] == float(row["cost_usd"])


async def test_a_report_applied_twice_leaves_the_same_values(
    fresh_database: str, tmp_path: Path
) -> None:
    async with vapi_engine(fresh_database, tmp_path) as (engine, _vapi):
        await add_project(engine)
        first = await post_event(engine, vapi_payloads.END_OF_CALL_REPORT)
        once = await call_row(fresh_database, vapi_payloads.CALL_SID, until="completed")
        again = await post_event(engine, vapi_payloads.END_OF_CALL_REPORT)
        # Then a record for another call: once it is written, so is the repeat before it.
        marker = vapi_payloads.report(call={"metadata": {"callSid": sid(901)}, "id": "other-1"})
        assert (await post_event(engine, marker)).status == 200
        await call_row(fresh_database, sid(901))
        twice = await call_row(fresh_database, vapi_payloads.CALL_SID)
    assert (first.status, again.status) == (200, 200)
    assert first.json() == {"recorded": "end-of-call-report", "callSid": vapi_payloads.CALL_SID}
    once.pop("updated_at")
    twice.pop("updated_at")
    assert twice == once
    assert once["project_id"] == "smith-plumbing"  # found from Vapi's id for the number
    assert float(once["cost_usd"]) == 0.0925


async def test_a_bad_or_missing_secret_is_refused_and_writes_nothing(
    fresh_database: str, tmp_path: Path
) -> None:
    async with vapi_engine(fresh_database, tmp_path) as (engine, _vapi):
        wrong = await post_event(engine, vapi_payloads.END_OF_CALL_REPORT, secret="guess")
        missing = await post_event(engine, vapi_payloads.END_OF_CALL_REPORT, secret=None)
        marker = vapi_payloads.report(call={"metadata": {"callSid": sid(902)}, "id": "other-2"})
        assert (await post_event(engine, marker)).status == 200
        await call_row(fresh_database, sid(902))
        found = await rows(
            fresh_database, "SELECT 1 FROM calls WHERE call_sid = $1", vapi_payloads.CALL_SID
        )
        refusals = engine.refusals.statistics()
    assert (wrong.status, missing.status) == (401, 401)
    assert "x-vapi-secret" in wrong.json()["error"]
    assert VAPI_SECRET not in wrong.body.decode()
    assert found == []
    assert refusals[("vapi", "bad_secret")] == 2


async def test_without_a_server_secret_every_message_is_refused(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path, VAPI_API_KEY=VAPI_KEY) as engine:
        answer = await post_event(engine, vapi_payloads.END_OF_CALL_REPORT, secret="anything")
    assert answer.status == 401
    assert "VAPI_SERVER_SECRET is not set" in answer.json()["error"]


async def test_bad_json_unknown_types_and_oversize_bodies_get_a_clear_4xx(
    fresh_database: str, tmp_path: Path
) -> None:
    async with vapi_engine(fresh_database, tmp_path) as (engine, _vapi):
        headers = {"x-vapi-secret": VAPI_SECRET}
        url = engine.bound_urls[0] + "/vapi/events"
        bad_json = await http_request("POST", url, body=b"{oops", headers=headers)
        bad_field = await post_event(engine, vapi_payloads.report(cost="a lot"))
        unknown = await post_event(engine, {"message": {"type": "party-invitation"}})
        request = await post_event(engine, {"message": {"type": "tool-calls"}})
        informational = await post_event(engine, {"message": {"type": "speech-update"}})
        oversize = await http_request(
            "POST", url, body=b"{}", headers=headers, declared_length=5 << 20
        )
        refusals = engine.refusals.statistics()
    assert bad_json.status == 400
    assert "not JSON" in bad_json.json()["error"]
    assert bad_field.status == 400
    assert bad_field.json()["field"] == "message.cost"
    assert unknown.status == 422
    assert unknown.json()["field"] == "message.type"
    assert "party-invitation" in unknown.json()["error"]
    assert request.status == 422
    assert "does not answer" in request.json()["error"]
    assert informational.status == 204
    assert oversize.status == 413
    assert refusals[("vapi", "body_too_large")] == 1
    assert refusals[("vapi", "refused_type")] == 2


async def test_a_report_for_a_call_we_never_saw_is_stored_with_its_numbers_project(
    fresh_database: str, tmp_path: Path
) -> None:
    unseen = vapi_payloads.report(
        call={"id": "unseen-call-1", "metadata": None, "phoneCallProviderId": None}
    )
    async with vapi_engine(fresh_database, tmp_path) as (engine, _vapi):
        await add_project(engine)
        answer = await post_event(engine, unseen)
        row = await call_row(fresh_database, "vapi:unseen-call-1")
    assert answer.status == 200
    assert (row["project_id"], row["to_number"], row["system"], row["status"]) == (
        "smith-plumbing", VAPI_NUMBER, "vapi", "completed",
    )  # fmt: skip


async def test_a_report_naming_only_vapis_call_id_completes_the_webhooks_record(
    fresh_database: str, tmp_path: Path
) -> None:
    async with vapi_engine(fresh_database, tmp_path) as (engine, vapi):
        await add_project(engine)
        answer = await twilio_post(engine, "/twilio/voice", call(sid(310), VAPI_NUMBER))
        (vapi_call,) = vapi.calls.values()
        await call_row(fresh_database, sid(310))  # the webhook's record is written
        legacy = vapi_payloads.LEGACY_END_OF_CALL_REPORT
        legacy = {"message": {**legacy["message"], "call": {"id": vapi_call.id}}}
        assert (await post_event(engine, legacy)).status == 200
        row = await call_row(fresh_database, sid(310), until="completed")
        strays = await rows(fresh_database, "SELECT 1 FROM calls WHERE call_sid LIKE 'vapi:%'")
    assert f"{vapi.stream_url}/{vapi_call.id}/transport" in answer.body.decode()
    assert (row["vapi_call_id"], row["cost_usd"], row["end_reason"]) == (
        vapi_call.id, Decimal("0.21"), "assistant-ended-call",
    )  # fmt: skip
    assert strays == []


@pytest.mark.parametrize(
    ("faults", "reason"),
    [
        (VapiFaults(down=True), "vapi_unreachable"),
        (VapiFaults(slow_s=3.0), "vapi_timeout"),
        (VapiFaults(fail_status=500), "vapi_refused"),
        (VapiFaults(bad_twiml=True), "vapi_bad_answer"),
    ],
)
async def test_when_vapi_cannot_take_the_call_this_engine_answers_with_an_alert(
    fresh_database: str, tmp_path: Path, faults: VapiFaults, reason: str
) -> None:
    async with vapi_engine(fresh_database, tmp_path, faults, VAPI_CREATE_TIMEOUT_S="0.5") as (
        engine,
        _vapi,
    ):
        await add_project(engine)
        began = trio.current_time()
        answer = await twilio_post(engine, "/twilio/voice", call(sid(320), VAPI_NUMBER))
        took_s = trio.current_time() - began
        row = await call_row(fresh_database, sid(320))
        alerts = await wait_until(
            lambda: rows(fresh_database, "SELECT * FROM event_log WHERE type = 'vapiError'"),
            timeout_s=10,
        )
        refusals = engine.refusals.statistics()
    assert answer.status == 200
    assert re.search(r'<Stream url="ws://127\.0\.0\.1:\d+/twilio/media"', answer.body.decode())
    assert took_s < 2.5  # the budget (0.5 s) and the engine's own answer, not Vapi's 3 s
    assert (row["status"], row["system"], row["vapi_fallback"]) == ("active", "openai", reason)
    assert row["engine_instance"] is not None  # answered here: this engine's lease covers it
    (alert,) = alerts
    assert (alert["level"], alert["call_sid"], alert["project_id"]) == (
        "error", sid(320), "smith-plumbing",
    )  # fmt: skip
    assert "this engine" in alert["message"]
    assert VAPI_KEY not in alert["message"]
    assert refusals[("voice", reason)] == 1


async def test_with_the_on_call_fallback_the_caller_is_dialled_through(
    fresh_database: str, tmp_path: Path
) -> None:
    async with vapi_engine(fresh_database, tmp_path, VapiFaults(fail_status=503)) as (engine, _):
        await add_project(engine, fallback="on_call")
        answer = await twilio_post(engine, "/twilio/voice", call(sid(330), VAPI_NUMBER))
        row = await call_row(fresh_database, sid(330))
    assert f'<Dial timeout="30">{ON_CALL}</Dial>' in answer.body.decode()
    assert (row["status"], row["end_reason"], row["system"], row["vapi_fallback"]) == (
        "missed", "vapi_unavailable", "vapi", "vapi_refused",
    )  # fmt: skip


async def test_without_an_on_call_number_the_on_call_fallback_answers_here(
    fresh_database: str, tmp_path: Path
) -> None:
    async with vapi_engine(fresh_database, tmp_path, VapiFaults(down=True)) as (engine, _):
        await add_project(engine, fallback="on_call", on_call=False)
        answer = await twilio_post(engine, "/twilio/voice", call(sid(340), VAPI_NUMBER))
    assert "/twilio/media" in answer.body.decode()  # never a dead end


async def test_a_vapi_number_without_a_vapi_key_is_answered_here(
    fresh_database: str, tmp_path: Path
) -> None:
    # A real model, no Vapi key: not the simulated Vapi either.
    async with running_engine(fresh_database, tmp_path, OPENAI_API_KEY="sk-test") as engine:
        await add_project(engine)
        answer = await twilio_post(engine, "/twilio/voice", call(sid(350), VAPI_NUMBER))
        row = await call_row(fresh_database, sid(350))
    assert "/twilio/media" in answer.body.decode()
    assert row["vapi_fallback"] == "vapi_not_configured"


async def test_a_number_toggled_back_to_openai_is_answered_here(
    fresh_database: str, tmp_path: Path
) -> None:
    async with vapi_engine(fresh_database, tmp_path) as (engine, vapi):
        await add_project(engine)
        to_vapi = await twilio_post(engine, "/twilio/voice", call(sid(360), VAPI_NUMBER))
        await set_number(engine, VAPI_NUMBER, "openai")
        back = await twilio_post(engine, "/twilio/voice", call(sid(361), VAPI_NUMBER))
        row = await call_row(fresh_database, sid(361))
    assert vapi.stream_url in to_vapi.body.decode()
    assert "/twilio/media" in back.body.decode()
    assert len(vapi.requests) == 1  # the second call never went to Vapi
    assert (row["system"], row["vapi_fallback"]) == ("openai", None)


async def _reported(dsn: str, call_sid: str) -> dict[str, Any]:
    """The call's row once Vapi's report is in it (its cost is the report's alone)."""
    found = await rows(dsn, "SELECT * FROM calls WHERE call_sid = $1", call_sid)
    return found[0] if found and found[0]["cost_usd"] is not None else {}


async def _deliveries(vapi: SimulatedVapi, kind: str, count: int) -> list[Any]:
    found = [d for d in vapi.deliveries if d.type == kind]
    return found if len(found) >= count else []


def _decode(value: Any) -> Any:
    return msgspec.json.decode(value) if isinstance(value, str | bytes) else value
