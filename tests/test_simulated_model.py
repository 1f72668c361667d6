"""The simulated Realtime model, over real sockets: every event it sends is a valid GA
server event, it follows the GA event sequences, it refuses what the real API refuses
(in the real error shape), and its faults do what they say."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from openai.types.realtime import RealtimeSessionCreateResponse

from actors.call.session import persona_of
from engine.projects import parse_project
from engine.realtime_codec import (
    TurnDetection,
    encode_append,
    encode_response_create,
    encode_session_update,
    encode_truncate,
    encode_user_text,
)
from engine.realtime_schema import SchemaViolation, unknown_keys, validate_server_event
from engine.simulator import faults
from engine.simulator.model import SimulatedModel
from engine.simulator.model_statistics import RECENT_EVENTS, Recent
from engine.simulator.mulaw import silence, tone
from engine.ws import HandshakeFailed, WebSocket, WebSocketClosed, connect

PROJECT = parse_project({"id": "acme", "name": "Acme", "timezone": "UTC"})


BEARER = ("Authorization", "Bearer sk-test")


@asynccontextmanager
async def model_session(model: SimulatedModel) -> AsyncIterator[WebSocket]:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(model.serve)
        socket = await open_socket(url)
        try:
            yield socket
        finally:
            await socket.aclose()
            nursery.cancel_scope.cancel()
    assert model.statistics().session_crashes_total == 0


async def open_socket(url: str, *extra_headers: tuple[str, str]) -> WebSocket:
    return await connect(
        url + "?model=gpt-realtime", headers=[BEARER, *extra_headers],
        max_message_bytes=16 << 20, send_timeout_s=5, connect_timeout_s=5,
    )  # fmt: skip


async def events_until(
    socket: WebSocket, last_type: str, *, check: Callable[[dict[str, Any]], None] | None = None
) -> list[dict[str, Any]]:
    """Server events up to and including the first of ``last_type``, each validated (by
    ``check`` if given); the events behind it stay for the next read."""
    events: list[dict[str, Any]] = []
    with trio.fail_after(10):
        while not events or events[-1]["type"] != last_type:
            batch = await socket.receive_batch()
            for n, message in enumerate(batch):
                event = json.loads(message)
                (check or validate)(event)
                events.append(event)
                if event["type"] == last_type:
                    socket.unread(batch[n + 1 :])
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
        encode_session_update(
            persona_of(PROJECT), model="gpt-realtime", builtin_tools=[], vad=TurnDetection()
        )
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
                persona_of(PROJECT), model="gpt-realtime", builtin_tools=[], vad=TurnDetection()
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
    assert model.statistics().violations_total == 1


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
    assert model.statistics().sessions_total == 1  # the same session, still listening


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
    assert model.statistics().sessions_expired == 1


# -- what the real API refuses --------------------------------------------------------------


async def spoken_response(socket: WebSocket, text: str) -> list[dict[str, Any]]:
    """Ask for ``text`` to be said; every event to its response.done."""
    await socket.send_text(encode_response_create(f'Say: "{text}"'))
    return await events_until(socket, "response.done")


def assistant_item_id(response_events: list[dict[str, Any]]) -> str:
    added = next(e for e in response_events if e["type"] == "response.output_item.added")
    item_id: str = added["item"]["id"]
    return item_id


def generated_ms(response_events: list[dict[str, Any]]) -> int:
    """The audio of a mu-law response, in milliseconds (8 bytes a millisecond)."""
    deltas = [e["delta"] for e in response_events if e["type"] == "response.output_audio.delta"]
    return sum(len(base64.b64decode(d)) for d in deltas) // 8


async def test_a_truncate_past_the_audio_generated_is_refused_in_the_real_shape() -> None:
    async with model_session(SimulatedModel()) as socket:
        await configured(socket)
        response = await spoken_response(socket, "one two three")
        item_id, audio_ms = assistant_item_id(response), generated_ms(response)
        truncate = {"type": "conversation.item.truncate", "event_id": "evt_t1", "item_id": item_id,
                    "content_index": 0, "audio_end_ms": audio_ms + 1}  # fmt: skip
        await send(socket, truncate)
        too_far = await events_until(socket, "error")
        await send(socket, truncate | {"event_id": "evt_t2", "audio_end_ms": 200})
        truncated = await events_until(socket, "conversation.item.truncated")
        # Truncated to 200 ms, the item is now that long: 250 ms is past its end.
        await send(socket, truncate | {"event_id": "evt_t3", "audio_end_ms": 250})
        past_new_end = await events_until(socket, "error")
    assert audio_ms == 300
    assert too_far[-1]["error"] == {
        "type": "invalid_request_error",
        "code": None,
        "message": "Audio content of 300ms is already shorter than 301ms",
        "param": None,
        "event_id": "evt_t1",
    }
    assert too_far[-1]["event_id"].startswith("event_")  # the server's own id
    assert truncated[-1] | {"event_id": ""} == {
        "type": "conversation.item.truncated", "event_id": "",
        "item_id": item_id, "content_index": 0, "audio_end_ms": 200,
    }  # fmt: skip
    assert past_new_end[-1]["error"]["message"] == (
        "Audio content of 200ms is already shorter than 250ms"
    )
    assert past_new_end[-1]["error"]["event_id"] == "evt_t3"


async def test_a_truncate_of_an_unknown_item_is_refused_with_its_code() -> None:
    model = SimulatedModel()
    async with model_session(model) as socket:
        await configured(socket)
        truncate = {"type": "conversation.item.truncate", "event_id": "evt_u",
                    "item_id": "item_nope", "content_index": 0, "audio_end_ms": 0}  # fmt: skip
        await send(socket, truncate)
        refused = await events_until(socket, "error")
    error = refused[-1]["error"]
    assert (error["type"], error["code"], error["event_id"]) == (
        "invalid_request_error",
        "item_truncate_invalid_item_id",
        "evt_u",
    )
    assert model.statistics().truncations == (
        ("item_nope", 0),
    )  # asked for, and counted as refused
    assert [code for _, code, _ in model.statistics().refused] == ["item_truncate_invalid_item_id"]


async def test_its_statistics_stay_bounded_however_many_events_a_session_brings() -> None:
    # The simulator runs inside the engine by default, for as long as the engine: three
    # times the window of refused truncates, bad events and caller texts keeps the last
    # RECENT_EVENTS of each and counts them all.
    events_each = 3 * RECENT_EVENTS
    model = SimulatedModel()
    async with model_session(model) as socket:
        await configured(socket)
        for n in range(events_each):
            truncate = {"type": "conversation.item.truncate", "item_id": f"item_{n}",
                        "content_index": 0, "audio_end_ms": n}  # fmt: skip
            await send(socket, truncate)
            await socket.send_text(b'{"type":"input_audio_buffer.append","audio":"AA","x":1}')
            await socket.send_text(encode_user_text(f"text {n}", f"i_{n}"))
        for _ in range(2 * events_each):  # one error per truncate and per bad event
            await events_until(socket, "error")
    stats = model.statistics()
    assert (stats.truncations_total, stats.violations_total) == (events_each, events_each)
    assert (stats.refused_total, stats.caller_texts_total) == (2 * events_each, events_each)
    assert stats.client_events_total == 1 + 3 * events_each  # the session.update too
    assert [len(stats.truncations), len(stats.violations)] == [RECENT_EVENTS] * 2
    assert [len(stats.refused), len(stats.caller_texts)] == [RECENT_EVENTS] * 2
    # The newest, oldest first.
    assert stats.truncations[-1] == (f"item_{events_each - 1}", events_each - 1)
    assert stats.caller_texts[0] == f"text {events_each - RECENT_EVENTS}"
    assert isinstance(stats.caller_texts, tuple)  # a frozen copy: the model's is its own


def test_a_recent_window_keeps_the_newest_and_counts_them_all() -> None:
    recent = Recent[int](bound=3)
    recent.add_all(range(10))
    assert (recent.snapshot(), recent.total) == ((7, 8, 9), 10)


async def test_a_second_response_create_while_one_is_active_is_refused_and_not_created() -> None:
    model = SimulatedModel()
    model.generation_speedup = 10.0  # 6 s of speech take 0.6 s: the first is still going
    async with model_session(model) as socket:
        await configured(socket)
        await socket.send_text(encode_response_create('Say: "' + "word " * 100 + '"'))
        started = await events_until(socket, "response.created")
        await send(socket, {"type": "response.create", "event_id": "evt_second"})
        refused = await events_until(socket, "error")
        await send(socket, {"type": "response.cancel", "event_id": "evt_cancel_1"})
        cancelled = await events_until(socket, "response.done")
        # Had the second been created, this cancel would find it running.
        await send(socket, {"type": "response.cancel", "event_id": "evt_cancel_2"})
        after = await events_until(socket, "error")
    events = started + refused + cancelled + after
    errors = [e["error"] for e in events if e["type"] == "error"]
    assert [(e["code"], e["event_id"]) for e in errors] == [
        ("conversation_already_has_active_response", "evt_second"),
        ("response_cancel_not_active", "evt_cancel_2"),
    ]
    response_id = started[-1]["response"]["id"]
    assert response_id in errors[0]["message"]
    assert [e["response"]["id"] for e in events if e["type"] == "response.created"] == [response_id]
    done = cancelled[-1]["response"]
    assert (done["id"], done["status"], done["status_details"]["reason"]) == (
        response_id,
        "cancelled",
        "client_cancelled",
    )
    (item,) = done["output"]
    assert item["status"] == "incomplete"  # cut short: what was said so far
    assert item["content"][0]["transcript"].split(" ")[0] == "word"


async def test_an_invalid_client_event_is_refused_with_its_event_id_echoed() -> None:
    async with model_session(SimulatedModel()) as socket:
        await events_until(socket, "session.created")
        bad = {"type": "input_audio_buffer.append", "event_id": "evt_bad", "audio": 7}
        await send(socket, bad)
        refused = await events_until(socket, "error")
        await send(socket, {"type": "response.cancel"})  # no event_id of its own
        anonymous = await events_until(socket, "error")
    assert refused[-1]["error"]["event_id"] == "evt_bad"
    assert refused[-1]["error"]["code"] == "invalid_event"
    assert anonymous[-1]["error"]["event_id"] is None


async def test_a_voice_change_after_the_first_audio_is_refused_and_the_config_kept() -> None:
    async with model_session(SimulatedModel()) as socket:
        await configured(socket)
        await spoken_response(socket, "hello")
        update = {"type": "realtime", "audio": {"output": {"voice": "cedar"}}}
        await send(socket, {"type": "session.update", "event_id": "evt_v", "session": update})
        refused = await events_until(socket, "error")
        await send(socket, {"type": "session.update", "session": {"type": "realtime"}})
        updated = await events_until(socket, "session.updated")
    assert refused[-1]["error"]["event_id"] == "evt_v"
    assert updated[-1]["session"]["audio"]["output"]["voice"] == PROJECT.voice


async def test_without_turn_detection_the_client_commits_and_an_empty_commit_is_refused() -> None:
    async with model_session(SimulatedModel()) as socket:
        await configured(socket)
        no_vad = {"type": "realtime", "audio": {"input": {"turn_detection": None}}}
        await send(socket, {"type": "session.update", "session": no_vad})
        await events_until(socket, "session.updated")
        await socket.send_text(audio(tone(400) + silence(600)))
        await send(socket, {"type": "input_audio_buffer.commit", "event_id": "evt_c1"})
        committed = await events_until(socket, "conversation.item.done")
        await send(socket, {"type": "input_audio_buffer.commit", "event_id": "evt_c2"})
        empty = await events_until(socket, "error")
    assert [e["type"] for e in committed][:3] == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]  # no speech_started: nothing listens for turns
    assert empty[-1]["error"]["code"] == "input_audio_buffer_commit_empty"
    assert empty[-1]["error"]["event_id"] == "evt_c2"


# -- the GA event sequences -------------------------------------------------------------------


def collapsed(events: list[dict[str, Any]]) -> list[str]:
    """Event types, runs of deltas shown once, audio transcript deltas left out."""
    types: list[str] = []
    for event in events:
        if event["type"] == "response.output_audio_transcript.delta":
            continue  # interleaved with the audio, in no fixed way
        if not (event["type"].endswith(".delta") and types and types[-1] == event["type"]):
            types.append(event["type"])
    return types


async def test_an_audio_response_follows_the_ga_sequence_and_done_lists_its_item() -> None:
    async with model_session(SimulatedModel()) as socket:
        await configured(socket)
        response = await spoken_response(socket, "Smith Plumbing, after hours.")
    assert collapsed(response) == [
        "response.created",
        "rate_limits.updated",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    ids = [e["event_id"] for e in response]
    assert len(set(ids)) == len(ids)
    (item,) = response[-1]["response"]["output"]
    assert (item["type"], item["role"], item["status"]) == ("message", "assistant", "completed")
    assert item["content"] == [
        {"type": "output_audio", "transcript": "Smith Plumbing, after hours."}
    ]  # no audio bytes


async def test_a_caller_turn_then_a_tool_call_follow_the_ga_sequence() -> None:
    async with model_session(SimulatedModel(scenario="emergency")) as socket:
        await configured(socket)
        greeting = await spoken_response(socket, "Hello")
        await socket.send_text(audio(tone(400) + silence(600)))
        turn = await events_until(socket, "response.done")
    assert collapsed(turn) == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "rate_limits.updated",
        "response.output_item.added",
        "conversation.item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    greeting_item = assistant_item_id(greeting)
    user_item = turn[2]["item_id"]
    assert turn[2]["previous_item_id"] == greeting_item  # committed
    assert (turn[3]["previous_item_id"], turn[3]["item"]["id"]) == (greeting_item, user_item)
    assert turn[10]["previous_item_id"] == user_item  # the function call, after the caller
    completed = turn[6]
    assert completed["usage"]["type"] == "tokens"
    assert completed["usage"]["total_tokens"] == (
        completed["usage"]["input_tokens"] + completed["usage"]["output_tokens"]
    )
    assert completed["usage"]["input_token_details"]["audio_tokens"] > 0
    (call,) = turn[-1]["response"]["output"]
    done = next(e for e in turn if e["type"] == "response.function_call_arguments.done")
    assert (call["type"], call["name"], call["call_id"], call["arguments"]) == (
        "function_call",
        "classify_call",
        done["call_id"],
        done["arguments"],
    )


async def test_session_created_carries_the_server_defaults_and_updates_deep_merge() -> None:
    async with model_session(SimulatedModel()) as socket:
        created = (await events_until(socket, "session.created"))[-1]["session"]
        await socket.send_text(
            encode_session_update(
                persona_of(PROJECT), model="gpt-realtime", builtin_tools=[], vad=TurnDetection()
            )
        )
        first = (await events_until(socket, "session.updated"))[-1]["session"]
        partial_vad = {"type": "server_vad", "silence_duration_ms": 800}
        update = {"type": "realtime", "audio": {"input": {"turn_detection": partial_vad,
                                                          "transcription": None}}}  # fmt: skip
        await send(socket, {"type": "session.update", "session": update})
        second = (await events_until(socket, "session.updated"))[-1]["session"]
    assert created["id"].startswith("sess_")
    assert (created["object"], created["type"], created["model"]) == (
        "realtime.session",
        "realtime",
        "gpt-realtime",
    )
    assert created["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert created["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert created["audio"]["input"]["transcription"] is None
    assert created["output_modalities"] == ["audio"]
    assert (first["id"], first["expires_at"]) == (created["id"], created["expires_at"])
    assert first["audio"]["input"]["format"] == {"type": "audio/pcmu"}  # replaced, no rate
    assert first["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    assert first["audio"]["input"]["transcription"]["model"] == "gpt-4o-mini-transcribe"
    assert first["instructions"] == PROJECT.instructions
    assert first["truncation"] == "auto"  # a default the update left alone
    vad = second["audio"]["input"]["turn_detection"]
    assert (vad["silence_duration_ms"], vad["create_response"]) == (800, True)  # merged
    assert second["audio"]["input"]["transcription"] is None  # null clears
    assert second["audio"]["output"]["format"] == {"type": "audio/pcmu"}  # kept


async def test_ignore_output_format_keeps_pcm_output_which_session_updated_shows() -> None:
    model = SimulatedModel()
    model.ignore_output_format = True
    async with model_session(model) as socket:
        updated = (await configured(socket))[-1]["session"]
        response = await spoken_response(socket, "hello")
    assert updated["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert updated["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    # 300 ms of 24 kHz 16-bit PCM, six times the bytes of as much mu-law.
    assert generated_ms(response) == 300 * 6


async def test_a_session_that_never_configures_audio_gets_its_mu_law_read_as_pcm() -> None:
    """The real defaults: 24 kHz PCM16 in. 1200 ms of mu-law is 200 ms of PCM."""
    async with model_session(SimulatedModel()) as socket:
        await events_until(socket, "session.created")
        await socket.send_text(audio(tone(1200) + silence(4800)))
        turn = await events_until(socket, "input_audio_buffer.speech_stopped")
    assert turn[-1]["audio_end_ms"] <= 1000  # 6000 ms of mu-law bytes, read as 1000 ms


# -- the beta protocol and the handshake ------------------------------------------------------


async def test_a_beta_handshake_is_closed_with_4000_beta_api_shape_disabled() -> None:
    model = SimulatedModel()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(model.serve)
        beta = await open_socket(url, ("OpenAI-Beta", "realtime=v1"))
        with trio.fail_after(10), pytest.raises(WebSocketClosed) as closed:
            await beta.receive_batch()
        await beta.aclose()
        ga = await open_socket(url)
        created = await events_until(ga, "session.created")
        await ga.aclose()
        nursery.cancel_scope.cancel()
    assert (closed.value.code, closed.value.reason) == (4000, "beta_api_shape_disabled")
    assert created[-1]["type"] == "session.created"
    assert (model.statistics().beta_refused, model.statistics().sessions_total) == (1, 1)


async def test_reset_handshakes_drops_the_next_connections_during_the_upgrade() -> None:
    model = SimulatedModel()
    model.reset_handshakes(2)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(model.serve)
        for _ in range(2):
            with pytest.raises((HandshakeFailed, trio.BrokenResourceError)):
                await open_socket(url)
        third = await open_socket(url)
        created = await events_until(third, "session.created")
        await third.aclose()
        nursery.cancel_scope.cancel()
    assert created[-1]["type"] == "session.created"
    assert (model.statistics().handshakes_reset, model.statistics().sessions_total) == (2, 1)


# -- faults on request ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "error_type"),
    [("rate_limit_exceeded", "rate_limit_error"), ("server_error", "server_error")],
)
async def test_fail_responses_fails_the_next_responses_then_they_work(
    code: str, error_type: str
) -> None:
    model = SimulatedModel()
    model.fail_responses(2, code=code)
    async with model_session(model) as socket:
        await configured(socket)
        failed = [await spoken_response(socket, "hello") for _ in range(2)]
        working = await spoken_response(socket, "hello")
    for response in failed:
        assert [e["type"] for e in response] == [
            "response.created",
            "rate_limits.updated",
            "response.done",
        ]  # no audio
        done = response[-1]["response"]
        assert (done["status"], done["output"]) == ("failed", [])
        assert done["status_details"]["type"] == "failed"
        error = done["status_details"]["error"]
        assert (error["type"], error["code"]) == (error_type, code)
        assert error["message"]
    assert working[-1]["response"]["status"] == "completed"
    assert generated_ms(working) == 300


async def caller_turn_events(model: SimulatedModel) -> list[dict[str, Any]]:
    async with model_session(model) as socket:
        await configured(socket)
        await socket.send_text(audio(tone(400) + silence(600)))
        turn = await events_until(socket, "response.done")
        if model.late_transcription:
            turn += await events_until(
                socket, "conversation.item.input_audio_transcription.completed"
            )
    return turn


async def test_late_transcription_arrives_after_the_response_done() -> None:
    on_time = [e["type"] for e in await caller_turn_events(SimulatedModel())]
    late_model = SimulatedModel()
    late_model.late_transcription = True
    late = [e["type"] for e in await caller_turn_events(late_model)]
    completed = "conversation.item.input_audio_transcription.completed"
    assert on_time.index(completed) < on_time.index("response.created")
    assert late.index(completed) > late.index("response.done")


async def test_whisper_transcription_reports_its_usage_as_a_duration() -> None:
    async with model_session(SimulatedModel()) as socket:
        whisper = {"audio": {"input": {"transcription": {"model": "whisper-1"}}}}
        await configured(socket)
        await send(socket, {"type": "session.update", "session": {"type": "realtime"} | whisper})
        await events_until(socket, "session.updated")
        await socket.send_text(audio(tone(400) + silence(600)))
        turn = await events_until(socket, "conversation.item.input_audio_transcription.completed")
    # The committed audio: 400 ms of speech and the 500 ms of silence that ended the turn.
    assert turn[-1]["usage"] == {"type": "duration", "seconds": 0.9}


async def test_omit_function_name_leaves_it_out_of_the_arguments_done_only() -> None:
    model = SimulatedModel(scenario="emergency")
    model.omit_function_name = True
    nameless: list[dict[str, Any]] = []

    def check(event: dict[str, Any]) -> None:
        if event["type"] == "response.function_call_arguments.done":
            nameless.append(event)
            with pytest.raises(SchemaViolation, match="name"):
                validate(event)  # the GA type requires it: this is the fault
            return
        validate(event)

    async with model_session(model) as socket:
        await configured(socket)
        await socket.send_text(audio(tone(400) + silence(600)))
        turn = await events_until(socket, "response.done", check=check)
    assert [sorted(e) for e in nameless] == [
        ["arguments", "call_id", "event_id", "item_id", "output_index", "response_id", "type"]
    ]
    added = next(e for e in turn if e["type"] == "conversation.item.added" and
                 e["item"]["type"] == "function_call")  # fmt: skip
    item_done = next(e for e in turn if e["type"] == "response.output_item.done")
    names = [added["item"]["name"], item_done["item"]["name"]]
    names.append(turn[-1]["response"]["output"][0]["name"])
    assert names == ["classify_call"] * 3


async def test_bad_input_in_one_session_leaves_another_undisturbed() -> None:
    model = SimulatedModel()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(model.serve)
        bad, good = await open_socket(url), await open_socket(url)
        await events_until(bad, "session.created")
        await configured(good)
        for garbage in (b"not json", b"[1, 2]", b'{"type": 7}', b'{"no": "type"}',
                        b'{"type":"input_audio_buffer.append","audio":"***"}'):  # fmt: skip
            await bad.send_text(garbage)
        refusals = [(await events_until(bad, "error"))[-1] for _ in range(5)]
        response = await spoken_response(good, "still here")
        await bad.aclose()
        await good.aclose()
        nursery.cancel_scope.cancel()
    assert all(e["error"]["type"] == "invalid_request_error" for e in refusals)
    assert response[-1]["response"]["status"] == "completed"
    assert model.statistics().session_crashes_total == 0
    assert model.statistics().sessions_total == 2


def test_a_fault_line_sets_the_knobs_and_a_typo_is_refused() -> None:
    model = SimulatedModel()
    faults.apply(model, faults.parse("fail_responses=2:rate_limit_exceeded, late_transcription,"
                                     " reset_handshakes=1, ignore_output_format"))  # fmt: skip
    codes = [model.take_failure(), model.take_failure(), model.take_failure()]
    assert [d and d["error"]["code"] for d in codes] == [
        "rate_limit_exceeded",
        "rate_limit_exceeded",
        None,
    ]
    assert (model.late_transcription, model.omit_function_name) == (True, False)
    assert model.ignore_output_format
    assert model.ignored_session_fields == {"audio.output.format"}
    with pytest.raises(ValueError, match="unknown fault 'late'"):
        faults.parse("late")
    with pytest.raises(ValueError, match="the code is one of"):
        faults.parse("fail_responses=1:quota")
