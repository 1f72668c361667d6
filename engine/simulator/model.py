"""A simulated OpenAI Realtime model: a GA-protocol WebSocket server on 127.0.0.1.

It is what the engine talks to when no OpenAI key is configured, and what the tests and
benchmarks use. It speaks the GA event sequences of protocols.md 1.15 (every event it
sends validates against the openai package's types; the tests check), checks every client
event it receives against those types (a violation is answered with an ``error`` event
and counted), detects caller speech by energy in the mu-law frames, greets, answers,
calls tools by scenario, stops speaking when interrupted, reports usage, and can simply
echo audio for benchmarks.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import logging
import re
import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import trio

from engine.realtime_schema import SchemaViolation, validate_client_event
from engine.simulator.mulaw import FRAME_BYTES, mean_amplitude, tone
from engine.simulator.scenarios import SCENARIOS, Call, Say, Step
from engine.ws import HandshakeFailed, Rejection, WebSocket, WebSocketClosed, accept

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

log = logging.getLogger("afterhours.simulator.model")

_json = msgspec.json.Encoder()
SPEECH_AMPLITUDE = 1000.0  # mean |sample| above this is speech (silence is 0)
AUDIO_CHUNK_BYTES = 800  # 100 ms per delta
MS_PER_WORD = 60
FRAME_B64_CHARS = 4 * ((FRAME_BYTES + 2) // 3)  # one frame, base64


@dataclass
class ModelStatistics:
    sessions_total: int = 0
    sessions_open: int = 0
    client_events_total: int = 0
    violations: list[str] = field(default_factory=list)
    truncations: list[tuple[str, int]] = field(default_factory=list)  # (item_id, audio_end_ms)
    caller_texts: list[str] = field(default_factory=list)  # text items (e.g. keypad digits)
    assistant_texts: list[str] = field(default_factory=list)  # restored after a reconnect
    sessions_expired: int = 0  # sessions that reached session_max_s
    turn_detection: dict[str, Any] | None = None  # as the last session.update set it
    models: list[str] = field(default_factory=list)  # each session's ?model= at its upgrade
    session_models: list[str] = field(default_factory=list)  # each session.update's model


class SimulatedModel:
    def __init__(
        self, *, scenario: str = "conversation", echo: bool = False, silence_ms: int = 500
    ) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
        self.scenario = scenario
        self.echo = echo
        self.silence_ms = silence_ms
        # OpenAI ends a session at its cap (60 min today) with a session_expired error.
        # Set it low to see an engine renew its sessions.
        self.session_max_s = 3600.0
        # False: session.created says nothing of the cap (an engine must then handle the
        # session_expired error itself).
        self.announce_expiry = True
        self.stats = ModelStatistics()
        self._ids = itertools.count(1)
        self._sessions: set[trio.CancelScope] = set()
        self._injected: list[dict[str, Any]] = []

    def inject(self, event: dict[str, Any]) -> None:
        """Send ``event`` (a fault the real API sends, such as an error with ``code:
        null``) from the session that next hears from its client: tests reproduce what
        the real service does and this simulator would not do by itself."""
        self._injected.append(event)

    def take_injected(self) -> list[dict[str, Any]]:
        taken, self._injected = self._injected, []
        return taken

    def drop_sessions(self) -> None:
        """End every open session abruptly (what a network fault or a server restart
        does to the engine's model sockets)."""
        for scope in tuple(self._sessions):
            scope.cancel()

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):06d}"

    async def serve(self, *, task_status: trio.TaskStatus[str]) -> None:
        """Listen on a free port; report ``ws://127.0.0.1:<port>/v1/realtime``."""
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(trio.serve_tcp, self.serve_stream, 0, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]
            task_status.started(f"ws://127.0.0.1:{port}/v1/realtime")

    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        """One connection: the upgrade, then a session until either side ends it."""
        async with stream:
            try:
                socket, request = await accept(
                    stream,
                    check=_check_upgrade,
                    max_message_bytes=16 << 20,
                    send_timeout_s=10,
                    handshake_timeout_s=10,
                )
            except (HandshakeFailed, trio.TooSlowError, trio.BrokenResourceError):
                return
            self.stats.sessions_total += 1
            self.stats.sessions_open += 1
            query = parse_qs(urlsplit(request.path).query)
            self.stats.models.append(query.get("model", [""])[0])
            scope = trio.CancelScope()
            self._sessions.add(scope)
            try:
                with scope:
                    await _Session(self, socket).run()
            except* (WebSocketClosed, trio.TooSlowError):
                pass  # the session is over: the engine hung up or stopped reading
            finally:
                self._sessions.discard(scope)
                self.stats.sessions_open -= 1
                await socket.aclose()


def _check_upgrade(request: Any) -> Rejection | None:
    if not request.path.split("?")[0].endswith("/realtime"):
        return Rejection(404, "not a realtime endpoint")
    if not request.headers.get("Authorization", "").startswith("Bearer "):
        return Rejection(401, "missing bearer token")
    return None


class _Session:
    def __init__(self, model: SimulatedModel, socket: WebSocket) -> None:
        self.model = model
        self.socket = socket
        self.session: dict[str, Any] = {"type": "realtime", "model": "gpt-realtime"}
        self.steps: list[Step] = list(SCENARIOS[model.scenario])
        self.audio_ms = 0
        self.speaking_since_ms: int | None = None
        self.last_voice_ms = 0
        self.user_item = ""
        self.responding: trio.CancelScope | None = None
        self.response_id = ""
        self.nursery: trio.Nursery | None = None

    async def run(self) -> None:
        cap_s = self.model.session_max_s
        # The server's own keys (protocols.md 1.13); expires_at in unix seconds.
        created = self.session | {"id": self.model.new_id("sess"), "object": "realtime.session"}
        if self.model.announce_expiry:
            created["expires_at"] = int(time.time() + cap_s)
        await self.send({"type": "session.created", "session": created})
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self.expire, cap_s, nursery.cancel_scope)
            while True:
                for message in await self.socket.receive_batch():
                    await self.handle(message)

    async def expire(self, cap_s: float, session: trio.CancelScope) -> None:
        await trio.sleep(cap_s)
        self.model.stats.sessions_expired += 1
        error = {
            "type": "invalid_request_error",
            "code": "session_expired",
            "message": "Your session hit the maximum duration.",
        }
        await self.send({"type": "error", "error": error})
        session.cancel()  # the server closes the socket

    async def send(self, event: dict[str, Any]) -> None:
        event.setdefault("event_id", self.model.new_id("event"))
        await self.socket.send_text(_json.encode(event))

    async def handle(self, message: str | bytes) -> None:
        self.model.stats.client_events_total += 1
        for injected in self.model.take_injected():
            await self.send(injected)
        try:
            event = msgspec.json.decode(message)
            if self.model.echo and event.get("type") == "input_audio_buffer.append":
                await self._run_handler(self.echo, event)  # benchmarks: no validation cost
                return
            validate_client_event(event)
        except (msgspec.DecodeError, SchemaViolation, AttributeError) as exc:
            self.model.stats.violations.append(str(exc))
            await self.send(
                {
                    "type": "error",
                    "error": {
                        "type": "invalid_request_error",
                        "code": "invalid_event",
                        "message": str(exc)[:500],
                    },
                }
            )
            return
        handler = getattr(self, "on_" + event["type"].replace(".", "_"), None)
        if handler is not None:
            await self._run_handler(handler, event)

    async def _run_handler(
        self, handler: Callable[[dict[str, Any]], Awaitable[None]], event: dict[str, Any]
    ) -> None:
        """A bad value (audio that is not base64) is that client's error, answered as the
        API answers one, with the session kept: never the end of every session here."""
        try:
            await handler(event)
        except (binascii.Error, ValueError) as exc:
            self.model.stats.violations.append(f"{event.get('type')}: {exc}")
            error = {
                "type": "invalid_request_error",
                "code": "invalid_value",
                "message": f"Invalid value in {event.get('type')}: {exc}"[:500],
                "event_id": event.get("event_id"),
            }
            await self.send({"type": "error", "error": error})

    async def echo(self, event: dict[str, Any]) -> None:
        """Every 160 bytes (one 20 ms frame) of appended audio back as one delta, however
        many frames the engine put in one append."""
        audio_b64: str = event["audio"]
        if len(audio_b64) <= FRAME_B64_CHARS:
            chunks = [audio_b64]
        else:
            audio = base64.b64decode(audio_b64)
            chunks = [
                base64.b64encode(audio[start : start + FRAME_BYTES]).decode()
                for start in range(0, len(audio), FRAME_BYTES)
            ]
        for chunk in chunks:
            await self.send(
                {
                    "type": "response.output_audio.delta",
                    "response_id": "resp_echo",
                    "item_id": "item_echo",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": chunk,
                }
            )

    async def on_session_update(self, event: dict[str, Any]) -> None:
        self.session.update(event["session"])
        if "model" in event["session"]:
            self.model.stats.session_models.append(str(event["session"]["model"]))
        audio_in = event["session"].get("audio", {}).get("input", {})
        if "turn_detection" in audio_in:
            self.model.stats.turn_detection = audio_in["turn_detection"]
        # A project's instructions may name the scenario to play: "[scenario: booking]".
        match = re.search(r"\[scenario: *(\w+)\]", str(event["session"].get("instructions", "")))
        if match and match[1] in SCENARIOS:
            self.steps = list(SCENARIOS[match[1]])
        await self.send({"type": "session.updated", "session": self.session})

    async def on_input_audio_buffer_append(self, event: dict[str, Any]) -> None:
        audio = base64.b64decode(event["audio"])
        for start in range(0, len(audio), FRAME_BYTES):
            await self.listen(audio[start : start + FRAME_BYTES])

    async def listen(self, frame: bytes) -> None:
        self.audio_ms += len(frame) // 8
        if mean_amplitude(frame) > SPEECH_AMPLITUDE:
            self.last_voice_ms = self.audio_ms
            if self.speaking_since_ms is None:
                self.speaking_since_ms = self.audio_ms
                self.user_item = self.model.new_id("item")
                await self.send(
                    {
                        "type": "input_audio_buffer.speech_started",
                        "item_id": self.user_item,
                        "audio_start_ms": self.audio_ms,
                    }
                )
                await self.cancel_response("turn_detected")
        elif (
            self.speaking_since_ms is not None
            and self.audio_ms - self.last_voice_ms >= self.model.silence_ms
        ):
            self.speaking_since_ms = None
            await self.end_caller_turn()

    async def end_caller_turn(self) -> None:
        item = self.user_item
        await self.send(
            {
                "type": "input_audio_buffer.speech_stopped",
                "item_id": item,
                "audio_end_ms": self.audio_ms,
            }
        )
        await self.send({"type": "input_audio_buffer.committed", "item_id": item})
        user = {
            "id": item,
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        await self.send({"type": "conversation.item.added", "item": user})
        await self.send({"type": "conversation.item.done", "item": user})
        await self.send(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item,
                "content_index": 0,
                "transcript": "My basement is flooding, a pipe burst.",
                "usage": {"type": "duration", "seconds": 2},
            }
        )
        await self.respond(None)

    async def on_response_create(self, event: dict[str, Any]) -> None:
        instructions = (event.get("response") or {}).get("instructions")
        await self.respond(instructions)

    async def on_response_cancel(self, event: dict[str, Any]) -> None:
        if self.responding is None:
            await self.send(
                {
                    "type": "error",
                    "error": {
                        "type": "invalid_request_error",
                        "code": "response_cancel_not_active",
                        "message": "Cancellation failed: no active response found.",
                    },
                }
            )
            return
        await self.cancel_response("client_cancelled")

    async def on_conversation_item_create(self, event: dict[str, Any]) -> None:
        item = event["item"]
        if item.get("type") == "message" and item.get("role") == "assistant":
            for content in item.get("content", []):
                self.model.stats.assistant_texts.append(content.get("text", ""))
        if item.get("type") == "message" and item.get("role") == "user":
            texts = [
                c.get("text", "") for c in item.get("content", []) if c.get("type") == "input_text"
            ]
            self.model.stats.caller_texts.extend(texts)

    async def on_conversation_item_truncate(self, event: dict[str, Any]) -> None:
        self.model.stats.truncations.append((event["item_id"], event["audio_end_ms"]))
        await self.send(
            {
                "type": "conversation.item.truncated",
                "item_id": event["item_id"],
                "content_index": event["content_index"],
                "audio_end_ms": event["audio_end_ms"],
            }
        )

    async def respond(self, instructions: str | None) -> None:
        """Start the next response (the greeting, a line, or a tool call) in its own task,
        so that caller audio keeps flowing in and can interrupt it."""
        if self.responding is not None or self.nursery is None:
            return
        step: Step
        if instructions is not None:
            step = Say(_quoted(instructions) or instructions)
        elif self.steps:
            step = self.steps.pop(0)
        else:
            step = Say("Is there anything else I can help you with?")
        self.response_id = self.model.new_id("resp")
        self.responding = trio.CancelScope()
        self.nursery.start_soon(self.run_response, step, self.responding, self.response_id)

    async def cancel_response(self, reason: str) -> None:
        if self.responding is None:
            return
        self.responding.cancel()
        self.responding = None
        await self.send(
            {
                "type": "response.done",
                "response": _response(
                    self.response_id, "cancelled", {"type": "cancelled", "reason": reason}
                ),
            }
        )

    async def run_response(self, step: Step, scope: trio.CancelScope, response_id: str) -> None:
        with scope:
            await self.send(
                {
                    "type": "response.created",
                    "response": _response(response_id, "in_progress", None),
                }
            )
            if isinstance(step, Say):
                await self.speak(response_id, step.text)
                # Words then a tool call in one response, as a real model does ("I'm
                # connecting you now" + transfer_to_on_call).
                follow = self.steps[0] if self.steps else None
                if isinstance(follow, Call) and follow.after_words:
                    self.steps.pop(0)
                    await self.call_tool(response_id, follow)
            else:
                await self.call_tool(response_id, step)
            self.responding = None
            await self.send(
                {
                    "type": "response.done",
                    "response": _response(response_id, "completed", None, usage=_usage(step)),
                }
            )

    async def speak(self, response_id: str, text: str) -> None:
        item = self.model.new_id("item")
        ids = {"response_id": response_id, "item_id": item, "output_index": 0, "content_index": 0}
        message = {
            "id": item,
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        await self.send(
            {
                "type": "response.output_item.added",
                "response_id": response_id,
                "output_index": 0,
                "item": message,
            }
        )
        await self.send({"type": "conversation.item.added", "item": message})
        words = text.split(" ")
        audio = tone(max(300, MS_PER_WORD * len(words)))
        starts = range(0, len(audio), AUDIO_CHUNK_BYTES)
        said = 0
        # The words interleaved with the audio, as a real model streams them (a response
        # cancelled half-way has sent half its words).
        for n, start in enumerate(starts, 1):
            chunk = base64.b64encode(audio[start : start + AUDIO_CHUNK_BYTES]).decode()
            await self.send({"type": "response.output_audio.delta", **ids, "delta": chunk})
            upto = len(words) * n // len(starts)
            if upto > said:
                delta = " ".join(words[said:upto]) + (" " if upto < len(words) else "")
                said = upto
                await self.send(
                    {"type": "response.output_audio_transcript.delta", **ids, "delta": delta}
                )
        await self.send({"type": "response.output_audio.done", **ids})
        await self.send(
            {"type": "response.output_audio_transcript.done", **ids, "transcript": text}
        )
        done = message | {
            "status": "completed",
            "content": [{"type": "output_audio", "transcript": text}],
        }
        await self.send(
            {
                "type": "response.output_item.done",
                "response_id": response_id,
                "output_index": 0,
                "item": done,
            }
        )
        await self.send({"type": "conversation.item.done", "item": done})

    async def call_tool(self, response_id: str, step: Call) -> None:
        item, call_id = self.model.new_id("item"), self.model.new_id("call")
        arguments = msgspec.json.encode(step.arguments).decode()
        call = {
            "id": item,
            "type": "function_call",
            "status": "in_progress",
            "call_id": call_id,
            "name": step.name,
            "arguments": "",
        }
        await self.send(
            {
                "type": "response.output_item.added",
                "response_id": response_id,
                "output_index": 0,
                "item": call,
            }
        )
        await self.send(
            {
                "type": "response.function_call_arguments.delta",
                "response_id": response_id,
                "item_id": item,
                "output_index": 0,
                "call_id": call_id,
                "delta": arguments,
            }
        )
        await self.send(
            {
                "type": "response.function_call_arguments.done",
                "response_id": response_id,
                "item_id": item,
                "output_index": 0,
                "call_id": call_id,
                "name": step.name,
                "arguments": arguments,
            }
        )
        done = call | {"status": "completed", "arguments": arguments}
        await self.send(
            {
                "type": "response.output_item.done",
                "response_id": response_id,
                "output_index": 0,
                "item": done,
            }
        )


def _quoted(text: str) -> str | None:
    """The text between the first pair of double quotes: what the bridge asks to be said."""
    first = text.find('"')
    last = text.rfind('"')
    return text[first + 1 : last] if 0 <= first < last else None


def _response(
    response_id: str,
    status: str,
    details: dict[str, Any] | None,
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "object": "realtime.response",
        "id": response_id,
        "status": status,
        "status_details": details,
        "output_modalities": ["audio"],
    }
    if usage is not None:
        response["usage"] = usage
    return response


def _usage(step: Step) -> dict[str, Any]:
    audio_out = 0 if isinstance(step, Call) else 20 * max(300, MS_PER_WORD * 10) // 1000
    return {
        "total_tokens": 120 + audio_out,
        "input_tokens": 100,
        "output_tokens": 20 + audio_out,
        "input_token_details": {"text_tokens": 80, "audio_tokens": 20, "cached_tokens": 0},
        "output_token_details": {"text_tokens": 20, "audio_tokens": audio_out},
    }
