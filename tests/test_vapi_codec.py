"""Vapi's wire formats, pure: the bypass request, Vapi's answer, its server messages as
records, from realistic payloads (tests/fixtures/vapi_payloads.py says where each shape
comes from)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from engine.vapi_codec import VapiAnswerInvalid, bypass_request, parse_created_call
from engine.vapi_messages import (
    MAX_TURNS,
    TURN_TEXT_MAX_CHARS,
    MessageRefused,
    decode,
    ended_status,
)
from tests.fixtures import vapi_payloads as vapi


def _json(value: object) -> bytes:
    return msgspec.json.encode(value)


def test_the_bypass_request_names_the_number_the_caller_and_our_call() -> None:
    body = bypass_request(
        phone_number_id="pn-1", assistant_id="as-1", caller="+15550001111",
        call_sid=vapi.CALL_SID, project_id="smith-plumbing",
    )  # fmt: skip
    assert body == {
        "phoneNumberId": "pn-1",
        "phoneCallProviderBypassEnabled": True,
        "customer": {"number": "+15550001111"},
        "metadata": {"callSid": vapi.CALL_SID, "project": "smith-plumbing"},
        "assistantId": "as-1",
    }
    without = bypass_request(
        phone_number_id="pn-1", assistant_id=None, caller="+1555", call_sid="CA1", project_id="p"
    )
    assert "assistantId" not in without  # Vapi then uses the number's own assistant


def test_vapis_answer_gives_its_call_id_and_the_twiml_as_vapi_wrote_it() -> None:
    created = parse_created_call(_json(vapi.CREATED_CALL))
    assert created.call_id == vapi.CALL_ID
    assert created.twiml == vapi.TWIML


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (b"<html>502 Bad Gateway</html>", "not a Vapi call"),
        (_json({"orgId": "x"}), "not a Vapi call"),  # no id
        (_json({**vapi.CREATED_CALL, "phoneCallProviderDetails": None}), "no phoneCallProvider"),
        (_json({**vapi.CREATED_CALL, "phoneCallProviderDetails": {"twiml": ""}}), "no phone"),
        (_json({**vapi.CREATED_CALL, "phoneCallProviderDetails": {"twiml": "<Response>"}}),
         "not well-formed"),
        (_json({**vapi.CREATED_CALL, "phoneCallProviderDetails": {"twiml": "<Say>hi</Say>"}}),
         "not <Response>"),
        (_json({**vapi.CREATED_CALL, "id": "x" * 80}), "not a Vapi id"),
    ],
)  # fmt: skip
def test_an_answer_twilio_could_not_run_is_refused(answer: bytes, problem: str) -> None:
    with pytest.raises(VapiAnswerInvalid, match=problem):
        parse_created_call(answer)


def test_an_end_of_call_report_completes_the_record() -> None:
    decoded = decode(_json(vapi.END_OF_CALL_REPORT))
    update = decoded.update
    assert update is not None
    assert (update.call_sid, update.source, update.system) == (vapi.CALL_SID, "vapi", "vapi")
    assert (update.status, update.end_reason, update.error) == (
        "completed", "customer-ended-call", None,
    )  # fmt: skip
    assert update.vapi_call_id == vapi.CALL_ID
    assert update.duration_s == 12.5
    assert update.cost_usd == 0.0925
    assert update.started_at == datetime(2026, 11, 26, 22, 6, 21, 224000, tzinfo=UTC)
    assert update.ended_at == datetime(2026, 11, 26, 22, 6, 33, 724000, tzinfo=UTC)
    assert update.summary == "Caller reported a flooding basement; transferred."
    assert update.from_number == "+15550001111"
    # The engine's transcript shape; the system prompt and tool calls are not turns.
    assert update.transcript == [
        {"role": "assistant", "text": "Smith Plumbing, how can I help?", "offset_ms": 880},
        {"role": "caller", "text": "My basement is flooding.", "offset_ms": 3780},
        {"role": "assistant", "text": "I am connecting you to the on-call plumber now.",
         "offset_ms": 6780},
    ]  # fmt: skip
    assert update.usage == {
        "system": "vapi",
        "cost_breakdown": {
            "transport": 0.0042, "stt": 0.0021, "llm": 0.0533, "tts": 0.0225, "vapi": 0.0104,
            "total": 0.0925, "llmPromptTokens": 1840.0, "llmCompletionTokens": 96.0,
            "ttsCharacters": 212.0,
        },
    }  # fmt: skip
    assert decoded.hints is not None
    assert decoded.hints.project_id == "smith-plumbing"
    assert decoded.hints.phone_number_id == vapi.PHONE_NUMBER_ID
    assert decoded.hints.to_number == "+15557654321"


def test_the_older_report_shape_gives_the_same_record() -> None:
    update = decode(_json(vapi.LEGACY_END_OF_CALL_REPORT)).update
    assert update is not None
    # No metadata and no provider id: known by Vapi's id only (the store resolves it).
    assert update.call_sid == f"vapi:{vapi.CALL_ID}"
    assert update.duration_s == 40.5  # from startedAt and endedAt
    assert update.summary == "Caller asked about Tuesday."
    assert update.cost_usd == 0.21
    assert update.usage is None
    assert update.transcript == [
        {"role": "assistant", "text": "Smith Plumbing, how can I help?", "offset_ms": 0},
        {"role": "caller", "text": "Is Tuesday free? It is about the sink.", "offset_ms": 0},
        {"role": "assistant", "text": "Tuesday at nine is free.", "offset_ms": 0},
    ]


def test_the_provider_id_names_the_call_when_the_metadata_does_not() -> None:
    update = decode(_json(vapi.report(call={"metadata": None}))).update
    assert update is not None
    assert update.call_sid == vapi.CALL_SID


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        ("customer-ended-call", "completed"),
        ("assistant-ended-call-after-message-spoken", "completed"),
        ("assistant-forwarded-call", "completed"),
        ("silence-timed-out", "completed"),
        ("exceeded-max-duration", "completed"),
        ("phone-call-provider-bypass-enabled-but-no-call-received", "missed"),
        ("customer-did-not-answer", "missed"),
        ("pipeline-error-openai-llm-failed", "failed"),
        ("call.start.error-get-assistant", "failed"),
        ("twilio-failed-to-connect-call", "failed"),
        ("a-reason-vapi-adds-next-year", "failed"),
        (None, "failed"),
    ],
)
def test_vapis_ended_reasons_as_statuses(reason: str | None, status: str) -> None:
    assert ended_status(reason) == status


def test_a_failed_call_keeps_its_reason_as_the_error() -> None:
    update = decode(_json(vapi.report(endedReason="pipeline-error-openai-llm-failed"))).update
    assert update is not None
    assert (update.status, update.error) == ("failed", "pipeline-error-openai-llm-failed")


def test_status_updates_keep_the_live_state() -> None:
    live = decode(_json(vapi.status_update("in-progress"))).update
    assert live is not None
    assert (live.status, live.source, live.end_reason) == (
        "active",
        "vapi",
        None,
    )
    ended = decode(_json(vapi.status_update("ended", "customer-ended-call"))).update
    assert ended is not None
    assert (ended.status, ended.end_reason, ended.cost_usd) == (
        "completed", "customer-ended-call", None,
    )  # fmt: skip
    assert decode(_json(vapi.status_update("ringing"))).update is None


@pytest.mark.parametrize(
    ("body", "status", "field", "says"),
    [
        (b"{not json", 400, None, "not JSON"),
        (_json({"type": "end-of-call-report"}), 400, None, "message"),  # no envelope
        (_json(vapi.report(cost="a lot")), 400, "message.cost", "Expected `float"),
        (_json(vapi.report(call={"id": None})), 422, "message.call.id", "message.call.id"),
        (_json({"message": {"type": "party-invitation"}}), 422, "message.type", "unknown"),
        (_json({"message": {"type": "tool-calls"}}), 422, "message.type", "does not answer"),
    ],
)
def test_bad_messages_are_refused_naming_what(
    body: bytes, status: int, field: str | None, says: str
) -> None:
    with pytest.raises(MessageRefused) as refused:
        decode(body)
    assert refused.value.status == status
    assert refused.value.field == field
    assert says in refused.value.message


def test_informational_messages_are_acknowledged_and_not_recorded() -> None:
    decoded = decode(_json({"message": {"type": "speech-update", "status": "started"}}))
    assert (decoded.type, decoded.update) == ("speech-update", None)


def test_a_huge_report_is_cut_not_refused() -> None:
    turns = [{"role": "user", "message": "x" * 5000, "secondsFromStart": n} for n in range(1200)]
    update = decode(_json(vapi.report(artifact={"messages": turns}))).update
    assert update is not None
    assert update.transcript is not None
    assert len(update.transcript) == MAX_TURNS
    assert all(len(turn["text"]) == TURN_TEXT_MAX_CHARS for turn in update.transcript)
