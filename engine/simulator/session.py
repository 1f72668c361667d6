"""One Realtime session of the simulated model: its config, its conversation, the caller
audio it hears, and its answers to each client event.

It refuses what the real API refuses, in the real ``error`` shape with the client's
``event_id`` echoed: a second ``response.create`` while one is active, a cancel with
nothing active, a truncate past the audio generated for an item or of an unknown item,
a commit of an empty buffer, a voice change after audio was produced. A refusal is that
client's problem only: the session goes on.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from typing import TYPE_CHECKING, Any, Final

import msgspec
import trio

from engine.realtime_schema import SchemaViolation, validate_client_event
from engine.simulator import audio_formats, events, phrases, responses, session_config
from engine.simulator.mulaw import FRAME_BYTES
from engine.simulator.responses import ActiveResponse, Item
from engine.simulator.scenarios import SCENARIOS, Say, Step, understood
from engine.simulator.session_config import audio_input

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from engine.simulator.model import SimulatedModel
    from engine.ws import WebSocket

_json: Final = msgspec.json.Encoder()
SPEECH_AMPLITUDE: Final = 1000.0  # mean |sample| above this is speech (silence is 0)
FRAME_MS: Final = 20  # the voice detector's step
MIN_COMMIT_MS: Final = 100  # the real API refuses to commit less
FRAME_B64_CHARS: Final = 4 * ((FRAME_BYTES + 2) // 3)  # one mu-law frame, base64
TOOL_FAILED_WORDS: Final = (
    "I'm sorry, I couldn't do that just now. Someone will call you back in the morning."
)


class Session:
    def __init__(self, model: SimulatedModel, socket: WebSocket, model_name: str) -> None:
        self.model = model
        self.socket = socket
        expires_at = int(time.time() + model.session_max_s) if model.announce_expiry else None
        self.config = session_config.server_defaults(
            model.new_id("sess"), model_name, silence_ms=model.silence_ms, expires_at=expires_at
        )
        self.conversation_id = model.new_id("conv")
        self.items: dict[str, Item] = {}
        self.last_item_id: str | None = None
        self.steps: list[Step] = list(SCENARIOS[model.scenario])
        # The scenario is chosen once: by the project's instructions ("[scenario: X]"),
        # or else by what the caller first says that names one (the model "understands"
        # the call); a model built with a scenario of its own keeps it.
        self.scenario_chosen = model.scenario != "conversation"
        # The pitch detector over the speech since the last commit (phrases.py).
        self.voiced_ms = 0
        self.voiced_sign_changes = 0
        self.negative = False
        # The last tool output was an error: the next answer says so, not the script.
        self.tool_failed = False
        self.audio_ms = 0  # all caller audio appended, in the input format's time
        self.buffer_ms = 0  # appended since the last commit or clear
        self.speaking_since_ms: int | None = None
        self.last_voice_ms = 0
        self.user_item = ""
        self.active: ActiveResponse | None = None
        self.responses_started = 0
        self.audio_produced = False  # the voice is fixed from the first audio on
        self.held_transcriptions: list[dict[str, Any]] = []
        self.nursery: trio.Nursery | None = None

    async def run(self) -> None:
        await self.send({"type": "session.created", "session": self.config})
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self.expire, self.model.session_max_s, nursery.cancel_scope)
            while True:
                for message in await self.socket.receive_batch():
                    await self.handle(message)

    async def expire(self, cap_s: float, session: trio.CancelScope) -> None:
        await trio.sleep(cap_s)
        self.model.tally.sessions_expired += 1
        expired = events.error(
            "Your session hit the maximum duration.", code="session_expired", client_event_id=None
        )
        await self.send(expired)
        session.cancel()  # the server closes the socket

    async def send(self, event: dict[str, Any]) -> None:
        event.setdefault("event_id", self.model.new_id("event"))
        await self.socket.send_text(_json.encode(event))

    async def refuse(
        self,
        client_event: dict[str, Any],
        message: str,
        *,
        code: str | None,
        param: str | None = None,
    ) -> None:
        """An ``error`` for ``client_event``, as the API sends it; counted."""
        self.model.tally.refused.add((str(client_event.get("type")), code, message))
        await self.send(
            events.error(
                message, code=code, client_event_id=client_event.get("event_id"), param=param
            )
        )

    # -- dispatch --------------------------------------------------------------------------

    async def handle(self, message: str | bytes) -> None:
        self.model.tally.client_events_total += 1
        for injected in self.model.take_injected():
            await self.send(injected)
        event: Any = None
        try:
            event = msgspec.json.decode(message)
            if self.model.echo and event.get("type") == "input_audio_buffer.append":
                await self._run_handler(self.echo, event)  # benchmarks: no validation cost
                return
            validate_client_event(event)
        except (msgspec.DecodeError, SchemaViolation, AttributeError) as exc:
            self.model.tally.violations.add(str(exc))
            offender = event if isinstance(event, dict) else {}
            await self.refuse(offender, str(exc), code="invalid_event")
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
            self.model.tally.violations.add(f"{event.get('type')}: {exc}")
            message = f"Invalid value in {event.get('type')}: {exc}"
            await self.refuse(event, message, code="invalid_value")

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
        ids = {"response_id": "resp_echo", "item_id": "item_echo", "output_index": 0}
        for chunk in chunks:
            await self.send(
                {"type": "response.output_audio.delta", **ids, "content_index": 0, "delta": chunk}
            )

    # -- session.update --------------------------------------------------------------------

    async def on_session_update(self, event: dict[str, Any]) -> None:
        update = session_config.without_paths(event["session"], self.model.ignored_session_fields)
        if "model" in event["session"]:
            self.model.tally.session_models.add(str(event["session"]["model"]))
        update.pop("model", None)  # the model is the URL's; an update cannot change it
        if self.audio_produced and session_config.voice_change(self.config, update):
            message = "Cannot update a conversation's voice if assistant audio is present."
            await self.refuse(
                event, message, code="cannot_update_voice", param="session.audio.output.voice"
            )
            return
        self.config = session_config.merged(self.config, update)
        turn_detection = ((event["session"].get("audio") or {}).get("input") or {}).get(
            "turn_detection", "absent"
        )
        if turn_detection != "absent":
            self.model.tally.turn_detection = turn_detection
        # A project's instructions may name the scenario to play: "[scenario: booking]".
        match = re.search(r"\[scenario: *(\w+)\]", str(update.get("instructions", "")))
        if match and match[1] in SCENARIOS:
            self.steps = list(SCENARIOS[match[1]])
            self.scenario_chosen = True
        await self.send({"type": "session.updated", "session": self.config})

    # -- caller audio ----------------------------------------------------------------------

    async def on_input_audio_buffer_append(self, event: dict[str, Any]) -> None:
        audio = base64.b64decode(event["audio"], validate=True)
        audio_format = audio_input(self.config)["format"]
        frame_bytes = FRAME_MS * audio_formats.bytes_per_ms(audio_format)
        for start in range(0, len(audio), frame_bytes):
            await self.listen(audio[start : start + frame_bytes], audio_format)

    async def listen(self, frame: bytes, audio_format: dict[str, Any]) -> None:
        frame_ms = audio_formats.duration_ms(frame, audio_format)
        self.audio_ms += frame_ms
        self.buffer_ms += frame_ms
        vad = audio_input(self.config)["turn_detection"]
        if vad is None:
            return  # no turn detection: the client commits and asks for responses
        if audio_formats.mean_amplitude(frame, audio_format) > SPEECH_AMPLITUDE:
            self.last_voice_ms = self.audio_ms
            changes, self.negative = audio_formats.sign_changes(frame, audio_format, self.negative)
            self.voiced_sign_changes += changes
            self.voiced_ms += frame_ms
            if self.speaking_since_ms is None:
                await self.speech_started(vad)
        elif self.speaking_since_ms is not None and self.audio_ms - self.last_voice_ms >= int(
            vad.get("silence_duration_ms") or self.model.silence_ms
        ):
            self.speaking_since_ms = None
            await self.end_caller_turn(vad)

    async def speech_started(self, vad: dict[str, Any]) -> None:
        self.speaking_since_ms = self.audio_ms
        self.user_item = self.model.new_id("item")
        await self.send(
            {
                "type": "input_audio_buffer.speech_started",
                "item_id": self.user_item,
                "audio_start_ms": self.audio_ms,
            }
        )
        if vad.get("interrupt_response", True):
            await self.cancel_response("turn_detected")

    async def end_caller_turn(self, vad: dict[str, Any]) -> None:
        await self.send(
            {
                "type": "input_audio_buffer.speech_stopped",
                "item_id": self.user_item,
                "audio_end_ms": self.audio_ms,
            }
        )
        await self.commit(self.user_item)
        # With interrupt_response off a response may still be running: no second one.
        if vad.get("create_response", True) and self.active is None:
            await self.respond(None)

    async def on_input_audio_buffer_commit(self, event: dict[str, Any]) -> None:
        if self.buffer_ms < MIN_COMMIT_MS:
            message = (
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS}ms of audio, but buffer only has {self.buffer_ms:.2f}ms of audio."
            )
            await self.refuse(event, message, code="input_audio_buffer_commit_empty")
            return
        self.speaking_since_ms = None
        await self.commit(self.user_item or self.model.new_id("item"))

    async def on_input_audio_buffer_clear(self, event: dict[str, Any]) -> None:
        self.buffer_ms = 0
        self.voiced_ms = self.voiced_sign_changes = 0
        self.speaking_since_ms = None
        await self.send({"type": "input_audio_buffer.cleared"})

    async def commit(self, item_id: str) -> None:
        """The buffer becomes a user item: committed, then the item added and done, then
        (if the session transcribes) its transcription, or later (late_transcription)."""
        heard_ms, self.buffer_ms, self.user_item = self.buffer_ms, 0, ""
        words = self.understand()
        await self.send(
            {
                "type": "input_audio_buffer.committed",
                "item_id": item_id,
                "previous_item_id": self.last_item_id,
            }
        )
        user = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        await self.add_item(Item(user))
        transcription = audio_input(self.config)["transcription"]
        if transcription is not None:
            await self.transcribe(item_id, str(transcription.get("model")), heard_ms, words)

    def understand(self) -> str:
        """The words of the speech since the last commit, from its pitch alone (see
        phrases.py); the first words that name a scenario choose it, unless one was
        chosen already. Whether the session transcribes or not: the model hears."""
        if self.voiced_ms:
            pitch_hz = self.voiced_sign_changes / 2 / (self.voiced_ms / 1000)
            words = phrases.words_at(pitch_hz)
        else:
            words = phrases.UNCLEAR_WORDS
        self.voiced_ms = self.voiced_sign_changes = 0
        scenario = understood(words)
        if scenario is not None and not self.scenario_chosen:
            self.steps = list(SCENARIOS[scenario])
            self.scenario_chosen = True
        return words

    async def transcribe(self, item_id: str, model: str, heard_ms: int, words: str) -> None:
        ids = {"item_id": item_id, "content_index": 0}
        delta = {"type": "conversation.item.input_audio_transcription.delta", **ids}
        completed = {
            "type": "conversation.item.input_audio_transcription.completed",
            **ids,
            "transcript": words,
            "usage": events.transcription_usage(model, heard_ms),
        }
        said = [delta | {"delta": words}, completed]
        if self.model.late_transcription:
            self.held_transcriptions += said  # until the next response.done
            return
        for transcription_event in said:
            await self.send(transcription_event)

    async def send_held_transcriptions(self) -> None:
        held, self.held_transcriptions = self.held_transcriptions, []
        for transcription_event in held:
            await self.send(transcription_event)

    # -- the conversation ------------------------------------------------------------------

    async def add_item(self, item: Item, *, done: bool = True) -> None:
        """Append an item to the conversation and announce it (``done`` too, unless the
        model is still producing it)."""
        previous, self.last_item_id = self.last_item_id, item.body["id"]
        self.items[item.body["id"]] = item
        added = {"type": "conversation.item.added", "previous_item_id": previous}
        await self.send(added | {"item": dict(item.body)})
        if done:
            await self.send({"type": "conversation.item.done", "item": dict(item.body)})

    async def on_conversation_item_create(self, event: dict[str, Any]) -> None:
        body = dict(event["item"])
        self._keep_texts(body)
        body.setdefault("id", self.model.new_id("item"))
        body.setdefault("object", "realtime.item")
        body.setdefault("status", "completed")
        await self.add_item(Item(body))

    def _keep_texts(self, item: dict[str, Any]) -> None:
        if item.get("type") == "function_call_output":
            self.tool_failed = _is_error(str(item.get("output", "")))
        if item.get("type") != "message":
            return
        contents = item.get("content", [])
        if item.get("role") == "assistant":
            self.model.tally.assistant_texts.add_all(c.get("text", "") for c in contents)
        if item.get("role") == "user":
            texts = [c.get("text", "") for c in contents if c.get("type") == "input_text"]
            self.model.tally.caller_texts.add_all(texts)

    async def on_conversation_item_delete(self, event: dict[str, Any]) -> None:
        if self.items.pop(event["item_id"], None) is None:
            message = f"Item with item_id not found: {event['item_id']}"
            await self.refuse(event, message, code="item_delete_invalid_item_id")
            return
        await self.send({"type": "conversation.item.deleted", "item_id": event["item_id"]})

    async def on_conversation_item_retrieve(self, event: dict[str, Any]) -> None:
        item = self.items.get(event["item_id"])
        if item is None:
            message = f"Item with item_id not found: {event['item_id']}"
            await self.refuse(event, message, code="item_retrieve_invalid_item_id")
            return
        await self.send({"type": "conversation.item.retrieved", "item": dict(item.body)})

    async def on_conversation_item_truncate(self, event: dict[str, Any]) -> None:
        item_id, end_ms = event["item_id"], event["audio_end_ms"]
        self.model.tally.truncations.add((item_id, end_ms))
        item = self.items.get(item_id)
        if item is None:
            message = f"Item with item_id not found: {item_id}"
            await self.refuse(event, message, code="item_truncate_invalid_item_id")
        elif item.body.get("role") != "assistant":
            message = "Only assistant messages with audio can be truncated."
            await self.refuse(event, message, code="invalid_value", param="item_id")
        elif event["content_index"] != 0:
            message = f"Invalid content_index: {event['content_index']}; the item has one part."
            await self.refuse(event, message, code="invalid_value", param="content_index")
        elif end_ms > item.audio_ms:
            # As the live API words it, with no code.
            message = f"Audio content of {item.audio_ms}ms is already shorter than {end_ms}ms"
            await self.refuse(event, message, code=None)
        else:
            _truncate(item, end_ms)
            truncated = {"item_id": item_id, "content_index": 0, "audio_end_ms": end_ms}
            await self.send({"type": "conversation.item.truncated", **truncated})

    # -- responses -------------------------------------------------------------------------

    async def on_response_create(self, event: dict[str, Any]) -> None:
        instructions = (event.get("response") or {}).get("instructions")
        await self.respond(instructions, event)

    async def on_response_cancel(self, event: dict[str, Any]) -> None:
        wanted = event.get("response_id")
        if self.active is None or (wanted is not None and wanted != self.active.id):
            message = "Cancellation failed: no active response found."
            await self.refuse(event, message, code="response_cancel_not_active")
            return
        await self.cancel_response("client_cancelled")

    async def respond(
        self, instructions: str | None, client_event: dict[str, Any] | None = None
    ) -> None:
        """Start the next response (the greeting, a line, or a tool call) in its own task,
        so that caller audio keeps flowing in and can interrupt it. Only one response
        may write to the conversation at a time: a client asking for a second is
        refused, and that response is not created."""
        if self.active is not None:
            if client_event is not None:
                message = (
                    "Conversation already has an active response in progress: "
                    f"{self.active.id}. Wait until the response is finished before "
                    "creating a new one."
                )
                await self.refuse(
                    client_event, message, code="conversation_already_has_active_response"
                )
            return
        if self.nursery is None:
            return
        active = ActiveResponse(self.model.new_id("resp"), trio.CancelScope())
        self.active = active
        failure = self.model.take_failure()
        if failure is not None:  # the step stays for the next response
            self.nursery.start_soon(responses.run_failed, self, active, failure)
            return
        self.nursery.start_soon(responses.run, self, active, self._next_step(instructions))

    def _next_step(self, instructions: str | None) -> Step:
        if instructions is not None:
            return Say(_quoted(instructions) or instructions)
        if self.tool_failed:
            # As a real model reads a tool's error: it does not go on as if it worked
            # ("you're booked" after the booking failed); the rest of the script is off.
            self.tool_failed = False
            self.steps = []
            return Say(TOOL_FAILED_WORDS)
        if self.steps:
            return self.steps.pop(0)
        return Say("Is there anything else I can help you with?")

    async def cancel_response(self, reason: str) -> None:
        active = self.active
        if active is None:
            return
        active.scope.cancel()
        self.active = None
        details = {"type": "cancelled", "reason": reason}
        usage = events.usage(active.audio_ms, active.text_tokens)
        await responses.finish(self, active, "cancelled", details=details, usage=usage)


def _truncate(item: Item, end_ms: int) -> None:
    """Keep the audio heard, and of the transcript about as much (the API drops the
    transcript of what was not heard)."""
    kept = end_ms / item.audio_ms if item.audio_ms else 0.0
    item.audio_ms = end_ms
    for content in item.body.get("content", []):
        words = str(content.get("transcript") or "").split(" ")
        content["transcript"] = " ".join(words[: int(len(words) * kept)])


def _is_error(output: str) -> bool:
    """A tool output that reports an error (actors/functions.py's ``{"error": ...}``)."""
    try:
        decoded = msgspec.json.decode(output)
    except msgspec.DecodeError:
        return False
    return isinstance(decoded, dict) and "error" in decoded


def _quoted(text: str) -> str | None:
    """The text between the first pair of double quotes: what the bridge asks to be said."""
    first = text.find('"')
    last = text.rfind('"')
    return text[first + 1 : last] if 0 <= first < last else None
