"""The simulated Realtime model, over real sockets: every event it sends is a valid GA
server event, and it behaves as protocols.md 1.15 describes."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from openai.types.realtime import RealtimeSessionCreateResponse

from engine.projects import parse_project
from engine.realtime_codec import (
    TurnDetection,
    encode_append,
    encode_response_create,
    encode_session_update,
    encode_truncate,
)
from engine.realtime_schema import unknown_keys, validate_server_event
from engine.simulator.model import SimulatedModel
from engine.simulator.mulaw import silence, tone
from engine.ws import HandshakeFailed, WebSocket, WebSocketClosed, connect

PROJECT = parse_project({"id": "acme", "name": "Acme", "timezone": "UTC"})


@asynccontextmanager
async def model_session(model: SimulatedModel) -> AsyncIterator[WebSocket]:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(model.serve)
        socket = await connect(
            url + "?model=gpt-realtime", headers=[("Authorization", "Bearer sk-test")],
            max_message_bytes=16 << 20, send_timeout_s=5, connect_timeout_s=5,
        )  # fmt: skip
        try:
            yield socket
        finally:
            await socket.aclose()
            nursery.cancel_scope.cancel()


async def events_until(socket: WebSocket, last_type: str) -> list[dict[str, Any]]:
    """Server events up to and including the first of ``last_type``, each validated."""
    events: list[dict[str, Any]] = []
    with trio.fail_after(10):
        while not events or events[-1]["type"] != last_type:
            for message in await socket.receive_batch():
                event = json.loads(message)
                validate(event)
                events.append(event)
                if event["type"] == last_type:
                    break
    return events


def validate(event: dict[str, Any]) -> None:
    """The SDK's event union types the session of session.created and session.updated as
    the request shape, so the whole session is checked against the response type (no
    unknown keys either), and the rest against the event union without the server-only
    keys."""
    if event["type"] in ("session.created", "session.updated"):
        session_model = RealtimeSessionCreateResponse.model_validate(event["session"])
        assert unknown_keys(session_model) == []
        server_keys = ("id", "object", "expires_at")
        session = {k: v for k, v in event["session"].items() if k not in server_keys}
        event = {**event, "session": session}
    validate_server_event(event)


async def configured(socket: WebSocket, **fields: Any) -> list[dict[str, Any]]:
    """Past session.created, then the engine's own session.update (mu-law both ways,
    server VAD, transcription), with ``fields`` merged over its session; up to
    session.updated."""
    await events_until(socket, "session.created")
    update = json.loads(
        encode_session_update(PROJECT, model="gpt-realtime", builtin_tools=[], vad=TurnDetection())
    )
    update["session"] |= fields
    await send(socket, update)
    return await events_until(socket, "session.updated")


async def send(socket: WebSocket, event: dict[str, Any]) -> None:
    await socket.send_text(json.dumps(event).encode())


def audio(payload: bytes) -> bytes:
    return encode_append(base64.b64encode(payload).decode())


async def test_handshake_session_update_and_a_spoken_greeting() -> None:
    async with model_session(SimulatedModel()) as socket:
        created = await events_until(socket, "session.created")
        await socket.send_text(
            encode_session_update(
                PROJECT, model="gpt-realtime", builtin_tools=[], vad=TurnDetection()
            )
        )
        updated = await events_until(socket, "session.updated")
        await socket.send_text(
            encode_response_create('Say exactly: "Smith Plumbing, after hours."')
        )
        greeting = await events_until(socket, "response.done")
    assert created[0]["session"]["type"] == "realtime"
    assert updated[-1]["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    types = [e["type"] for e in greeting]
    assert types[0] == "response.created"
    assert "response.output_audio.delta" in types
    transcript = next(e for e in greeting if e["type"] == "response.output_audio_transcript.done")
    assert transcript["transcript"] == "Smith Plumbing, after hours."
    assert greeting[-1]["response"]["status"] == "completed"
    assert greeting[-1]["response"]["usage"]["output_tokens"] > 0


async def test_caller_speech_is_detected_and_the_scenario_calls_a_tool() -> None:
    async with model_session(SimulatedModel(scenario="emergency")) as socket:
        await configured(socket)
        await socket.send_text(audio(silence(200) + tone(400) + silence(600)))
        turn = await events_until(socket, "response.done")
    types = [e["type"] for e in turn]
    assert types[:3] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
    ]
    assert turn[0]["audio_start_ms"] == 220  # speech began in the frame after 200 ms
    call = next(e for e in turn if e["type"] == "response.function_call_arguments.done")
    assert call["name"] == "classify_call"
    assert json.loads(call["arguments"])["intent"] == "emergency"
    assert turn[-1]["response"]["status"] == "completed"


async def test_barge_in_cancels_the_response_and_truncate_is_acknowledged() -> None:
    async with model_session(SimulatedModel()) as socket:
        await configured(socket)
        await socket.send_text(encode_response_create('Say: "' + "word " * 200 + '"'))
        first_delta = await events_until(socket, "response.output_audio.delta")
        await socket.send_text(audio(tone(100)))
        interrupted = await events_until(socket, "response.done")
        await socket.send_text(encode_truncate(first_delta[-1]["item_id"], 100))
        truncated = await events_until(socket, "conversation.item.truncated")
    assert "input_audio_buffer.speech_started" in [e["type"] for e in interrupted]
    assert interrupted[-1]["response"]["status"] == "cancelled"
    assert interrupted[-1]["response"]["status_details"]["reason"] == "turn_detected"
    assert truncated[-1]["audio_end_ms"] == 100


async def test_an_invalid_client_event_gets_an_error_and_is_counted() -> None:
    model = SimulatedModel()
    async with model_session(model) as socket:
        await events_until(socket, "session.created")
        await socket.send_text(b'{"type":"input_audio_buffer.append","audio":"AA","bogus":1}')
        error = await events_until(socket, "error")
    assert error[-1]["error"]["code"] == "invalid_event"
    assert len(model.stats.violations) == 1


async def test_audio_that_is_not_base64_is_that_sessions_error_and_the_session_goes_on() -> None:
    """One bad append used to crash the simulator's session handler; the real API answers
    an error and keeps the session, and so does this one."""
    model = SimulatedModel()
    async with model_session(model) as socket:
        await events_until(socket, "session.created")
        await socket.send_text(b'{"type":"input_audio_buffer.append","audio":"***not base64"}')
        error = await events_until(socket, "error")
        await socket.send_text(encode_append(base64.b64encode(tone(400)).decode()))
        after = await events_until(socket, "input_audio_buffer.speech_started")
    assert error[-1]["error"]["code"] == "invalid_value"
    assert after[-1]["type"] == "input_audio_buffer.speech_started"
    assert model.stats.sessions_total == 1  # the same session, still listening


async def test_echo_mode_returns_every_frame_as_one_delta() -> None:
    async with model_session(SimulatedModel(echo=True)) as socket:
        await events_until(socket, "session.created")
        payload = base64.b64encode(tone(20)).decode()
        await socket.send_text(encode_append(payload))
        echoed = await events_until(socket, "response.output_audio.delta")
        two_frames = tone(20) + bytes(160)  # an engine that batches two frames per append
        await socket.send_text(encode_append(base64.b64encode(two_frames).decode()))
        deltas: list[bytes] = []
        with trio.fail_after(10):
            while len(deltas) < 2:
                for message in await socket.receive_batch():
                    deltas.append(base64.b64decode(json.loads(message)["delta"]))
    assert echoed[-1]["delta"] == payload
    assert deltas == [tone(20), bytes(160)]


async def test_an_upgrade_without_a_bearer_token_is_refused() -> None:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(SimulatedModel().serve)
        with pytest.raises(HandshakeFailed, match="401"):
            await connect(url, headers=[], max_message_bytes=1 << 20, send_timeout_s=5,
                          connect_timeout_s=5)  # fmt: skip
        nursery.cancel_scope.cancel()


async def test_a_capped_session_says_when_it_expires_then_ends_with_session_expired() -> None:
    model = SimulatedModel()
    model.session_max_s = 0.3
    async with model_session(model) as socket:
        opened_at = time.time()
        created = await events_until(socket, "session.created")
        expires_at = created[-1]["session"]["expires_at"]
        error = await events_until(socket, "error")
        with pytest.raises(WebSocketClosed):
            await socket.receive_batch()
    assert opened_at - 1 <= expires_at <= opened_at + 0.3
    assert error[-1]["error"]["code"] == "session_expired"
    assert model.stats.sessions_expired == 1
