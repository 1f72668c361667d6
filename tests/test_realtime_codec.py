"""The Realtime codec: everything it sends validates against the openai package's own
types with no unknown keys; what it reads is the GA wire format of docs/wire-formats.md 1."""

from __future__ import annotations

import json
from typing import Any

import pytest

from actors.call.session import persona_of
from engine.projects import parse_project
from engine.realtime_codec import (
    AudioDelta,
    FunctionCallDone,
    OtherServerEvent,
    RealtimeProtocolError,
    ResponseDone,
    ServerError,
    SpeechStarted,
    TurnDetection,
    decode_server_event,
    encode_append,
    encode_assistant_text,
    encode_function_output,
    encode_response_create,
    encode_session_update,
    encode_truncate,
    encode_user_text,
)
from engine.realtime_schema import SchemaViolation, validate_client_event, validate_server_event

PROJECT = parse_project(
    {
        "id": "acme-hvac",
        "name": "Acme HVAC",
        "timezone": "America/Chicago",
        "instructions": "You are the after-hours dispatcher for Acme HVAC.",
        "voice": "cedar",
        "function_url": "https://hooks.example.com/acme",
        "tools": [
            {
                "name": "get_slots",
                "description": "Free slots",
                "parameters": {"type": "object", "properties": {"day": {"type": "string"}}},
            }
        ],
    }
)
BUILTIN = [
    {
        "type": "function",
        "name": "end_call",
        "description": "Hang up after the goodbye has played.",
        "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}},
    }
]


def client_events() -> list[tuple[str, bytes]]:
    return [
        ("append", encode_append("/////w==")),
        ("response.create", encode_response_create()),
        ("response.create+instructions", encode_response_create("Greet the caller.")),
        ("truncate", encode_truncate("item_B2", 340)),
        ("function output", encode_function_output("call_Q1", '{"slots": []}')),
        ("user text", encode_user_text("The caller pressed 1.")),
        ("assistant text", encode_assistant_text("Thanks for calling.")),
        (
            "session.update",
            encode_session_update(
                persona_of(PROJECT),
                model="gpt-realtime",
                builtin_tools=BUILTIN,
                vad=TurnDetection(),
            ),
        ),
    ]


@pytest.mark.parametrize(("name", "frame"), client_events(), ids=[n for n, _ in client_events()])
def test_every_client_event_validates_against_the_sdk_types(name: str, frame: bytes) -> None:
    validate_client_event(json.loads(frame))


def test_session_update_is_the_ga_shape_for_a_call() -> None:
    session = json.loads(
        encode_session_update(
            persona_of(PROJECT), model="gpt-realtime", builtin_tools=BUILTIN, vad=TurnDetection()
        )
    )["session"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert session["audio"]["output"] == {"format": {"type": "audio/pcmu"}, "voice": "cedar"}
    assert session["audio"]["input"]["turn_detection"]["interrupt_response"] is True
    assert [tool["name"] for tool in session["tools"]] == ["get_slots", "end_call"]
    assert session["instructions"] == PROJECT.instructions


def test_the_validator_catches_beta_shapes_and_unknown_keys() -> None:
    with pytest.raises(SchemaViolation, match="unknown keys"):
        validate_client_event({"type": "input_audio_buffer.append", "audio": "AA", "extra": 1})
    with pytest.raises(SchemaViolation):
        validate_client_event(
            {
                "type": "session.update",
                "session": {"type": "realtime", "input_audio_format": "g711_ulaw"},
            }
        )


def test_truncate_never_sends_a_negative_length() -> None:
    assert json.loads(encode_truncate("item_1", -20))["audio_end_ms"] == 0


IDS = {"response_id": "resp_R1", "item_id": "item_B2", "output_index": 0, "content_index": 0}
SERVER_EVENTS: list[dict[str, Any]] = [
    {"type": "response.output_audio.delta", "event_id": "event_1", **IDS, "delta": "/////w=="},
    {"type": "input_audio_buffer.speech_started", "event_id": "event_2", "item_id": "item_U1",
     "audio_start_ms": 1200},
    {"type": "response.function_call_arguments.done", "event_id": "event_3",
     "response_id": "resp_R2", "item_id": "item_F1", "output_index": 0, "call_id": "call_Q1",
     "name": "get_slots", "arguments": "{\"day\": \"2026-11-27\"}"},
    {"type": "response.done", "event_id": "event_4", "response": {
        "object": "realtime.response", "id": "resp_R1", "status": "cancelled",
        "status_details": {"type": "cancelled", "reason": "turn_detected"},
        "usage": {"total_tokens": 10, "input_tokens": 7, "output_tokens": 3}}},
    {"type": "error", "event_id": "event_5", "error": {"type": "invalid_request_error",
     "code": "response_cancel_not_active", "message": "no active response", "param": None,
     "event_id": "evt_client_7"}},
    {"type": "rate_limits.updated", "event_id": "event_6", "rate_limits": [
        {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012}]},
]  # fmt: skip


@pytest.mark.parametrize("event", SERVER_EVENTS, ids=[e["type"] for e in SERVER_EVENTS])
def test_the_server_samples_are_real_ga_events(event: dict[str, Any]) -> None:
    validate_server_event(event)  # keeps these fixtures honest


def test_server_events_decode_to_what_the_call_actor_reads() -> None:
    decoded = [decode_server_event(json.dumps(event)) for event in SERVER_EVENTS]
    audio, speech, function, done, error, other = decoded
    assert audio == AudioDelta("resp_R1", "item_B2", "/////w==")
    assert speech == SpeechStarted("item_U1", 1200)
    assert function == FunctionCallDone(
        "resp_R2", "item_F1", "call_Q1", '{"day": "2026-11-27"}', name="get_slots"
    )
    assert isinstance(done, ResponseDone)
    assert (done.response.status, done.response.usage) == (
        "cancelled",
        {"total_tokens": 10, "input_tokens": 7, "output_tokens": 3},
    )
    assert isinstance(error, ServerError)
    assert error.error.code == "response_cancel_not_active"
    assert other == OtherServerEvent("rate_limits.updated")


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param("{nope", id="not-json"),
        pytest.param('{"type":"response.output_audio.delta","item_id":"i"}', id="known-missing"),
        pytest.param('{"no_type":1}', id="no-type"),
    ],
)
def test_malformed_server_frames_are_protocol_errors(frame: str) -> None:
    with pytest.raises(RealtimeProtocolError):
        decode_server_event(frame)
