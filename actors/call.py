"""The call actor: one per live call, between the caller (Twilio) and the model.

It owns the call's two sockets and its state. Two readers, one per socket, and nothing
else on the per-frame path: each reader handles every message one read delivers and
writes straight to the other socket (no channel, no task per frame); caller audio goes to
the model as Twilio sent it (``audio/pcmu`` both ways). After each audio delta it sends a
Twilio ``mark`` carrying how much of that item has been sent; Twilio echoes the mark once
the caller has heard it, so a barge-in truncates the model's item to what was heard.

Within a call one failure ends the call (a plain nursery: one cancels all); the calls
group reports it and never restarts it. The record is finalised exactly once, in
``finally``, after the model socket is closed (a leaked model session costs money).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import httpx
import msgspec
import trio

from actors.call_limits import (
    SAY_DURATION_GOODBYE,
    SAY_SILENCE_GOODBYE,
    SAY_STILL_THERE,
    SAY_WRAP_UP,
    CallLimits,
)
from actors.functions import call_function
from actors.twilio_rest import REST_TIMEOUT_S, TwilioRest, TwilioRestError
from engine.config import AlertLevel
from engine.messages import (
    Alert,
    CallUpdated,
    FunctionCallRecorded,
    new_event_id,
    utc_now,
)
from engine.pricing import add_usage, call_cost_usd
from engine.realtime_codec import (
    AudioDelta,
    CallerTranscript,
    FunctionCallDone,
    RealtimeProtocolError,
    ResponseCreated,
    ResponseDone,
    ServerError,
    SpeechStarted,
    SpeechStopped,
    TranscriptDone,
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
from engine.twilio_codec import (
    Dtmf,
    Mark,
    Media,
    Stop,
    TwilioProtocolError,
    decode_twilio,
    encode_clear,
    encode_mark,
    encode_media,
)
from engine.twiml import transfer
from engine.ws import HandshakeFailed, WebSocket, WebSocketClosed, connect

if TYPE_CHECKING:
    from engine.lifecycle import StopSignal
    from engine.mailbox import Outbox
    from engine.messages import StoreWrite
    from engine.projects import Project

log = logging.getLogger("afterhours.call")

MODEL_CONNECT_TIMEOUT_S = 10.0
SEND_TIMEOUT_S = 5.0
FINALISE_TIMEOUT_S = 2.0
# Reconnect attempts after the model socket drops, and the wait before each.
RECONNECT_BACKOFF_S = (0.2, 0.5, 1.0, 2.0)
GOODBYE_GRACE_S = 10.0
RECORD_SEND_TIMEOUT_S = 2.0
# A business function slower than this gets a short "one moment" from the model.
FILLER_AFTER_S = 1.0
FILLER_INSTRUCTIONS = (
    'Tell the caller in a few words that you are checking. Say: "One moment, let me check."'
)
MAX_MODEL_MESSAGE_BYTES = 16 << 20
_json = msgspec.json.Encoder()

_BUILTINS = frozenset({"classify_call", "transfer_to_on_call", "end_call"})

BUILTIN_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "classify_call",
        "description": "Record how urgent the call is, once you know.",
        "parameters": {
            "type": "object",
            "properties": {
                "intent": {"type": "string", "enum": ["emergency", "routine", "unknown"]},
                "summary": {"type": "string"},
            },
            "required": ["intent", "summary"],
        },
    },
    {
        "type": "function",
        "name": "transfer_to_on_call",
        "description": "Transfer the caller to the on-call technician (emergencies only).",
        "parameters": {
            "type": "object",
            "properties": {"reason": {"type": "string"}},
            "required": ["reason"],
        },
    },
    {
        "type": "function",
        "name": "end_call",
        "description": "Hang up after your goodbye has played.",
        "parameters": {
            "type": "object",
            "properties": {"reason": {"type": "string"}},
            "required": ["reason"],
        },
    },
]


@dataclass(frozen=True, slots=True)
class ModelEndpoint:
    url: str  # ws(s)://.../v1/realtime
    model: str
    api_key: str


@dataclass(frozen=True, slots=True)
class CallSetup:
    call_sid: str
    stream_sid: str
    project: Project
    model: ModelEndpoint
    twilio_rest: TwilioRest | None = None  # None: no Twilio account configured


@dataclass
class _Playback:
    """What the caller has heard of the model's current item (from marks)."""

    item_id: str = ""
    response_id: str = ""
    sent_ms: int = 0
    played_ms: int = 0
    dropped_responses: set[str] = field(default_factory=set)


class CallEnded(Exception):
    def __init__(self, reason: str, failed: bool = False) -> None:
        self.reason = reason
        self.failed = failed
        super().__init__(reason)


class CallActor:
    def __init__(
        self,
        setup: CallSetup,
        twilio: WebSocket,
        store: Outbox[StoreWrite],
        alerts: Outbox[Alert],
        done: trio.Event,
    ) -> None:
        self._setup = setup
        self._twilio = twilio
        self._store = store
        self._alerts = alerts
        self._done = done
        self._model: WebSocket | None = None
        self._playback = _Playback()
        self._transcript: list[dict[str, Any]] = []
        self._usage: dict[str, Any] = {}
        self._intent: Literal["emergency", "routine", "unknown"] | None = None
        self._pending_calls: dict[str, list[FunctionCallDone]] = {}
        self._started_at_s = 0.0
        self._first_audio_ms: int | None = None
        self._ended = CallEnded("caller_hung_up")
        self._nursery: trio.Nursery | None = None
        self._http: httpx.AsyncClient | None = None
        self._responding: str | None = None
        self._response_wanted = False
        self._tools_running = 0
        self._function_results: dict[str, str] = {}
        self._limits: CallLimits | None = None
        self._hang_up_reason: str | None = None  # hang up once the goodbye has played
        self._reconnects = 0
        self._frames_dropped = 0

    async def run(self, stop: StopSignal, *, task_status: trio.TaskStatus[None]) -> None:
        self._started_at_s = trio.current_time()
        started_at = utc_now()
        try:
            self._model = await self._open_model()
            task_status.started()
            async with httpx.AsyncClient() as http, trio.open_nursery() as nursery:
                self._http, self._nursery = http, nursery
                project = self._setup.project
                self._limits = CallLimits(
                    project.silence_timeout_s, project.max_call_s, self._started_at_s
                )
                nursery.start_soon(self._guard, self._watch_limits, nursery.cancel_scope)
                nursery.start_soon(self._guard, self._pump_twilio, nursery.cancel_scope)
                nursery.start_soon(self._guard, self._pump_model, nursery.cancel_scope)
                with stop.interruptible():
                    await trio.sleep_forever()
                self._ended = CallEnded("engine_stopping")
                nursery.cancel_scope.cancel()
        finally:
            with trio.move_on_after(FINALISE_TIMEOUT_S + REST_TIMEOUT_S) as scope:
                scope.shield = True
                if self._model is not None:
                    await self._model.aclose()  # at once: an open model session costs money
                if self._ended.reason == "transferred":
                    await self._transfer()  # before our socket closes: Twilio takes the call
                await self._finalise(started_at)
            self._done.set()

    async def _open_model(self) -> WebSocket:
        model = await self._connect_model()
        project = self._setup.project
        greeting = project.greeting or f"Thank you for calling {project.name}. How can I help?"
        await model.send_text(
            encode_response_create(f'Greet the caller. Say exactly: "{greeting}"')
        )
        self._responding = "greeting"
        return model

    async def _connect_model(self) -> WebSocket:
        """A model session configured for this call (the greeting is the caller's first
        start only)."""
        setup = self._setup
        model = await connect(
            f"{setup.model.url}?model={setup.model.model}",
            headers=[("Authorization", f"Bearer {setup.model.api_key}")],
            max_message_bytes=MAX_MODEL_MESSAGE_BYTES,
            send_timeout_s=SEND_TIMEOUT_S,
            connect_timeout_s=MODEL_CONNECT_TIMEOUT_S,
        )
        await model.send_text(
            encode_session_update(
                setup.project,
                model=setup.model.model,
                builtin_tools=BUILTIN_TOOLS,
                vad=TurnDetection(),
            )
        )
        return model

    async def _reconnect(self, closed: WebSocketClosed) -> bool:
        """The model socket dropped mid-call: a new session, the conversation so far
        restored from the transcript, and the call carries on. False when every attempt
        failed (the call then ends, recorded as failed)."""
        setup = self._setup
        log.warning("call %s: model socket dropped (%s); reconnecting", setup.call_sid, closed)
        self._openai_alert(AlertLevel.WARNING, "Model connection dropped", str(closed))
        for delay_s in RECONNECT_BACKOFF_S:
            await trio.sleep(delay_s)
            try:
                model = await self._connect_model()
                for turn in self._transcript:
                    text = str(turn["text"])
                    restore = (
                        encode_user_text if turn["role"] == "caller" else encode_assistant_text
                    )
                    await model.send_text(restore(text))
            except (OSError, HandshakeFailed, WebSocketClosed, trio.TooSlowError) as exc:
                log.warning("call %s: reconnect failed: %s", setup.call_sid, exc)
                continue
            old, self._model = self._model, model
            if old is not None:
                await old.aclose()
            self._responding, self._playback = None, _Playback()
            self._reconnects += 1
            return True
        self._openai_alert(AlertLevel.ERROR, "Model unreachable", "every reconnect failed")
        return False

    def _openai_alert(self, level: AlertLevel, title: str, message: str) -> None:
        setup = self._setup
        alert = Alert(
            level,
            "openaiError",
            title,
            message,
            project_id=setup.project.id,
            call_sid=setup.call_sid,
        )
        self._alerts.send_nowait(alert)

    async def _to_model(self, data: bytes) -> None:
        """Send to the model; while its socket is being replaced the frame is dropped
        (the model reader handles the reconnect)."""
        assert self._model is not None
        try:
            await self._model.send_text(data)
        except WebSocketClosed:
            self._frames_dropped += 1

    async def _guard(self, work: Any, scope: trio.CancelScope) -> None:
        """Run one of the call's tasks; if it ends the call (a hang-up, a broken socket,
        ``end_call``), record why and stop the others. A task that simply finishes (the
        tools of one response) leaves the call running."""
        try:
            await work()
        except CallEnded as ended:
            self._ended = ended
        except WebSocketClosed as closed:
            if work == self._pump_twilio:
                self._ended = CallEnded("caller_hung_up")
            else:
                reason = f"model_disconnected: {closed.reason or closed.code}"
                self._ended = CallEnded(reason, failed=True)
        except trio.TooSlowError:
            self._ended = CallEnded("peer_not_reading", failed=True)
        else:
            return
        scope.cancel()

    # -- caller -> model ------------------------------------------------------------------

    async def _pump_twilio(self) -> None:
        assert self._model is not None
        while True:
            for message in await self._twilio.receive_batch():
                try:
                    event = decode_twilio(message)
                except TwilioProtocolError as exc:
                    log.warning("call %s: bad Twilio frame: %s", self._setup.call_sid, exc)
                    continue
                if isinstance(event, Media):
                    if event.streamSid != self._setup.stream_sid:
                        log.warning("call %s: media for another stream", self._setup.call_sid)
                        continue
                    await self._to_model(encode_append(event.media.payload))
                elif isinstance(event, Mark):
                    self._heard(event.mark.name)
                    self._activity(caller=False)  # the model's words are still playing
                    self._maybe_hang_up()
                elif isinstance(event, Dtmf):
                    text = f"The caller pressed {event.dtmf.digit} on the keypad."
                    await self._to_model(encode_user_text(text))
                    await self._create_response()
                elif isinstance(event, Stop):
                    raise CallEnded("caller_hung_up")

    def _heard(self, mark: str) -> None:
        item_id, _, ms = mark.rpartition(":")
        if item_id == self._playback.item_id and ms.isdigit():
            self._playback.played_ms = max(self._playback.played_ms, int(ms))

    # -- model -> caller ------------------------------------------------------------------

    async def _pump_model(self) -> None:
        while True:
            try:
                await self._read_model()
            except WebSocketClosed as closed:
                if not await self._reconnect(closed):
                    raise

    async def _read_model(self) -> None:
        assert self._model is not None
        while True:
            for message in await self._model.receive_batch():
                try:
                    event = decode_server_event(message)
                except RealtimeProtocolError as exc:
                    log.warning("call %s: bad Realtime frame: %s", self._setup.call_sid, exc)
                    continue
                if isinstance(event, AudioDelta):
                    self._activity(caller=False)
                    await self._play(event)
                elif isinstance(event, SpeechStarted):
                    self._activity(caller=True)
                    await self._barge_in()
                elif isinstance(event, SpeechStopped):
                    self._activity(caller=True)
                elif isinstance(event, TranscriptDone):
                    self._say("assistant", event.transcript)
                elif isinstance(event, CallerTranscript):
                    self._say("caller", event.transcript)
                elif isinstance(event, FunctionCallDone):
                    self._pending_calls.setdefault(event.response_id, []).append(event)
                elif isinstance(event, ResponseCreated):
                    self._responding = event.response.id
                elif isinstance(event, ResponseDone):
                    await self._response_done(event)
                elif isinstance(event, ServerError) and not event.benign:
                    log.error("call %s: model error %s", self._setup.call_sid, event.error.message)
                    raise CallEnded(f"model_error: {event.error.code or event.error.type}", True)

    async def _play(self, delta: AudioDelta) -> None:
        playback = self._playback
        if delta.response_id in playback.dropped_responses:
            return  # interrupted: the caller must not hear the rest
        if delta.item_id != playback.item_id:
            playback.item_id, playback.sent_ms, playback.played_ms = delta.item_id, 0, 0
        playback.response_id = delta.response_id
        if self._first_audio_ms is None:
            self._first_audio_ms = int((trio.current_time() - self._started_at_s) * 1000)
        stream_sid = self._setup.stream_sid
        await self._twilio.send_text(encode_media(stream_sid, delta.delta))
        playback.sent_ms += _audio_ms(delta.delta)
        await self._twilio.send_text(encode_mark(stream_sid, f"{delta.item_id}:{playback.sent_ms}"))

    async def _barge_in(self) -> None:
        playback = self._playback
        if not playback.item_id or playback.played_ms >= playback.sent_ms:
            return  # nothing is playing: the caller is simply taking their turn
        assert self._model is not None
        # Deltas of this response may still be on their way: the caller must not hear them.
        playback.dropped_responses.add(playback.response_id)
        await self._twilio.send_text(encode_clear(self._setup.stream_sid))
        await self._to_model(encode_truncate(playback.item_id, playback.played_ms))
        playback.sent_ms = playback.played_ms  # what was cleared will never be heard

    async def _response_done(self, done: ResponseDone) -> None:
        self._responding = None
        add_usage(self._usage, done.response.usage or {})
        if done.response.status == "cancelled":
            self._playback.dropped_responses.add(done.response.id)
        calls = self._pending_calls.pop(done.response.id, [])
        if done.response.status == "completed" and calls:  # protocols.md 1.4
            self._tools_running += 1
            assert self._nursery is not None
            self._nursery.start_soon(
                self._guard, partial(self._run_tools, calls), self._nursery.cancel_scope
            )
        elif self._response_wanted and not self._tools_running:
            await self._create_response()
        self._maybe_hang_up()

    async def _create_response(self, instructions: str | None = None) -> None:
        """One response at a time: ask now, or as soon as the current one is done."""
        assert self._model is not None
        if self._responding is not None:
            self._response_wanted = True
            return
        self._response_wanted = False
        self._responding = "requested"
        await self._to_model(encode_response_create(instructions))

    async def _run_tools(self, calls: list[FunctionCallDone]) -> None:
        """The tool calls of one response, in order; their outputs, then one response.
        A business function that takes longer than ``FILLER_AFTER_S`` gets a short
        "one moment" from the model, so the caller never sits in dead air."""
        assert self._model is not None
        try:
            for call in calls:
                if call.name in _BUILTINS:
                    output = self._run_builtin(call)
                else:
                    output = await self._run_function_with_filler(call)
                await self._to_model(encode_function_output(call.call_id, output))
        finally:
            self._tools_running -= 1
        if self._hang_up_reason is not None:
            self._maybe_hang_up()  # end_call: the goodbye was said before the tool call
            return
        await self._create_response()

    async def _run_function_with_filler(self, call: FunctionCallDone) -> str:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._filler_if_slow, nursery.cancel_scope)
            output = await self._run_function(call)
            nursery.cancel_scope.cancel()
        return output

    async def _filler_if_slow(self, scope: trio.CancelScope) -> None:
        await trio.sleep(FILLER_AFTER_S)
        with trio.CancelScope(shield=True):  # never half-send a frame
            await self._create_response(FILLER_INSTRUCTIONS)

    async def _run_function(self, call: FunctionCallDone) -> str:
        """The project's own function over HTTP; recorded either way."""
        assert self._http is not None
        try:
            arguments = msgspec.json.decode(call.arguments)
        except msgspec.DecodeError:
            arguments = call.arguments
        setup = self._setup
        result = await call_function(
            self._http, setup.project, call.name, arguments, setup.call_sid
        )
        record = FunctionCallRecorded(
            new_event_id(),
            setup.call_sid,
            call.name,
            result.outcome,
            result.latency_ms,
            utc_now(),
            project_id=setup.project.id,
            arguments=arguments if isinstance(arguments, dict) else {"raw": call.arguments},
            http_status=result.http_status,
            error=result.error,
        )
        with trio.move_on_after(RECORD_SEND_TIMEOUT_S):
            await self._store.send(record)
        if result.outcome != "ok":
            self._alerts.send_nowait(
                Alert(
                    AlertLevel.ERROR,
                    "functionCallFailure",
                    "Function call failed",
                    f"Function {call.name} failed: {result.error}",
                    project_id=setup.project.id,
                    call_sid=setup.call_sid,
                    metadata={"functionName": call.name, "error": result.error},
                )
            )
        return result.output

    def _run_builtin(self, call: FunctionCallDone) -> str:
        try:
            arguments = msgspec.json.decode(call.arguments)
        except msgspec.DecodeError:
            return _json.encode({"error": "arguments were not valid JSON"}).decode()
        if call.name == "classify_call" and isinstance(arguments, dict):
            intent = arguments.get("intent")
            self._intent = "unknown"
            if intent in ("emergency", "routine"):
                self._intent = "emergency" if intent == "emergency" else "routine"
            return _json.encode({"ok": True, "intent": self._intent}).decode()
        if call.name == "end_call":
            self._hang_up_reason = "end_call"
            return _json.encode({"ok": True, "note": "the call ends after your goodbye"}).decode()
        if call.name == "transfer_to_on_call":
            return self._prepare_transfer()
        return _json.encode({"error": f"unknown tool {call.name}"}).decode()

    def _prepare_transfer(self) -> str:
        """The transfer happens once the model's last words have been heard."""
        if not self._setup.project.on_call_number:
            return _json.encode({"error": "this business has no on-call number"}).decode()
        if self._setup.twilio_rest is None:
            note = "transfers need a Twilio account (TWILIO_ACCOUNT_SID)"
            return _json.encode({"error": note}).decode()
        self._hang_up_reason = "transferred"
        return _json.encode(
            {"ok": True, "note": "the caller is connected after your words"}
        ).decode()

    async def _transfer(self) -> None:
        setup = self._setup
        assert setup.twilio_rest is not None
        assert setup.project.on_call_number is not None
        try:
            async with httpx.AsyncClient() as client:
                await setup.twilio_rest.update_call(
                    client, setup.call_sid, transfer(setup.project.on_call_number)
                )
        except TwilioRestError as exc:
            log.error("call %s: transfer failed: %s", setup.call_sid, exc)
            self._ended = CallEnded("transfer_failed", failed=True)
            self._alerts.send_nowait(
                Alert(
                    AlertLevel.ERROR,
                    "twilioError",
                    "Transfer failed",
                    str(exc),
                    project_id=setup.project.id,
                    call_sid=setup.call_sid,
                )
            )

    def _activity(self, *, caller: bool) -> None:
        if self._limits is not None:
            self._limits.activity(trio.current_time(), caller=caller)

    def _maybe_hang_up(self) -> None:
        """End the call once a pending hang-up's last words have been heard."""
        playback = self._playback
        drained = playback.played_ms >= playback.sent_ms
        if self._hang_up_reason is not None and self._responding is None and drained:
            raise CallEnded(self._hang_up_reason)

    async def _watch_limits(self) -> None:
        """Silence and duration limits (actors/call_limits.py); a goodbye that never
        finishes playing still ends the call after ``GOODBYE_GRACE_S``."""
        limits = self._limits
        assert limits is not None
        while True:
            await trio.sleep_until(limits.next_check_s())
            action = limits.due(trio.current_time())
            if action == "prompt_silence":
                await self._create_response(SAY_STILL_THERE)
            elif action == "warn_duration":
                await self._create_response(SAY_WRAP_UP)
            elif action in ("end_silence", "end_duration"):
                reason = "silence_timeout" if action == "end_silence" else "max_duration"
                self._hang_up_reason = reason
                goodbye = SAY_SILENCE_GOODBYE if action == "end_silence" else SAY_DURATION_GOODBYE
                await self._create_response(goodbye)
                await trio.sleep(GOODBYE_GRACE_S)
                raise CallEnded(reason)

    def _say(self, role: str, text: str) -> None:
        offset_ms = int((trio.current_time() - self._started_at_s) * 1000)
        self._transcript.append({"role": role, "text": text, "offset_ms": offset_ms})

    async def _finalise(self, started_at: Any) -> None:
        ended = self._ended
        if self._reconnects:
            log.warning(
                "call %s: %d model reconnect(s); %d caller frame(s) dropped meanwhile",
                self._setup.call_sid,
                self._reconnects,
                self._frames_dropped,
            )
        duration_s = trio.current_time() - self._started_at_s
        record = CallUpdated(
            self._setup.call_sid,
            project_id=self._setup.project.id,
            status="failed" if ended.failed else "completed",
            intent=self._intent,
            end_reason=ended.reason,
            error=ended.reason if ended.failed else None,
            started_at=started_at,
            ended_at=utc_now(),
            duration_s=round(duration_s, 3),
            transcript=self._transcript,
            usage=self._usage,
            cost_usd=call_cost_usd(self._usage, duration_s),
            time_to_first_audio_ms=self._first_audio_ms,
            stream_sid=self._setup.stream_sid,
        )
        await self._store.send(record)


def _audio_ms(delta_b64: str) -> int:
    """Milliseconds of 8 kHz mu-law in a base64 payload (8 bytes per ms)."""
    padding = delta_b64.count("=", -2)
    return (len(delta_b64) * 3 // 4 - padding) // 8
