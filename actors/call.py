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
import time
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
from actors.early_sessions import take_early
from actors.functions import call_function
from actors.model_link import CONNECT_ERRORS, ModelEndpoint, open_model_socket
from actors.twilio_rest import REST_TIMEOUT_S, TwilioRest, TwilioRestError
from engine.config import AlertLevel
from engine.histogram import FAST_BUCKETS_S, SLOW_BUCKETS_S, Histogram
from engine.logs import call_context
from engine.messages import (
    Alert,
    CallUpdated,
    FunctionCallRecorded,
    new_event_id,
    utc_now,
)
from engine.metric_samples import (
    CallBegan,
    CallFinished,
    CallProgress,
    FunctionCalled,
    MetricsSample,
    ModelConnected,
)
from engine.pricing import DEFAULT_PRICES, Prices, add_usage, call_cost_usd
from engine.realtime_codec import (
    AudioDelta,
    CallerTranscript,
    FunctionCallDone,
    RealtimeProtocolError,
    ResponseCreated,
    ResponseDone,
    ServerError,
    SessionCreated,
    SpeechStarted,
    SpeechStopped,
    TranscriptDelta,
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
from engine.tls import client_context
from engine.twilio_codec import (
    Dtmf,
    Mark,
    Media,
    Stop,
    TwilioProtocolError,
    UnknownEvent,
    decode_twilio,
    encode_clear,
    encode_mark,
    encode_media,
)
from engine.twiml import transfer, turn_away
from engine.ws import WebSocket, WebSocketClosed

if TYPE_CHECKING:
    from actors.early_sessions import EarlyRequest
    from engine.lifecycle import StopSignal
    from engine.mailbox import Outbox
    from engine.messages import StoreWrite
    from engine.projects import Project

log = logging.getLogger("afterhours.call")

FINALISE_TIMEOUT_S = 2.0
# Reconnect attempts after the model socket drops: the wait before each retry, and the
# most a reconnection may take in all before the call is ended politely.
RECONNECT_BACKOFF_S = (0.2, 0.5, 1.0, 2.0)
RECONNECT_BUDGET_S = 15.0
# The first connection: retries after a quick refusal, within one connect timeout.
FIRST_BACKOFF_S = (0.2, 0.5, 1.0)
# Realtime error codes after which the session is replaced rather than the call ended.
SESSION_GONE_CODES = frozenset({"session_expired"})
GOODBYE_GRACE_S = 10.0
RECORD_SEND_TIMEOUT_S = 2.0
# What a call needs once asked to stop: its goodbye heard, the record and a REST update.
STOP_BUDGET_S = GOODBYE_GRACE_S + FINALISE_TIMEOUT_S + REST_TIMEOUT_S
# A business function slower than this gets a short "one moment" from the model.
FILLER_AFTER_S = 1.0
FILLER_INSTRUCTIONS = (
    'Tell the caller in a few words that you are checking. Say: "One moment, let me check."'
)
# A session is renewed this long before its cap, at the first quiet moment (nobody
# speaking, nothing playing, no tool running); at the cap itself it is renewed regardless.
RENEW_MARGIN_S = 60.0
RENEW_MARGIN_FRACTION = 0.1  # for short caps: renew in the last tenth
QUIET_POLL_S = 0.2
PROGRESS_EVERY_S = 5.0  # how often a live call reports its timings to the metrics
SAY_ENGINE_GOODBYE = (
    'We must end the call now. Say: "I am sorry, I have to end our call now. '
    'Please call back in a few minutes. Goodbye."'
)
SORRY_MODEL_DOWN = (
    "We are sorry, our assistant is not available right now. Please call again later."
)
_json = msgspec.json.Encoder()

# Close codes the WebSocket layer sends when the peer broke the protocol (RFC 6455 7.4.1):
# 1002 protocol error, 1007 invalid data, 1008 policy (a ping flood, a peer that stopped
# reading: engine/ws.py), 1009 message too big.
_PROTOCOL_CLOSE_CODES = frozenset({1002, 1007, 1008, 1009})

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
class CallSetup:
    call_sid: str
    stream_sid: str
    project: Project
    model: ModelEndpoint
    twilio_rest: TwilioRest | None = None  # None: no Twilio account configured
    early: Outbox[EarlyRequest] | None = None  # sessions opened at webhook time
    session_max_s: float = 3600.0  # the model's session cap (MODEL_SESSION_MAX_S)
    prices: Prices = DEFAULT_PRICES
    metrics: Outbox[MetricsSample] | None = None  # DROP_NEWEST: a metric never waits


@dataclass
class _Playback:
    """What the caller has heard of the model's current item (from marks)."""

    item_id: str = ""
    response_id: str = ""
    sent_ms: int = 0
    played_ms: int = 0
    dropped_responses: set[str] = field(default_factory=set)


class ModelUnavailable(Exception):
    """No model session could be opened within the budget."""


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
        self._renewals = 0
        self._frames_dropped = 0
        self._early_session = False
        self._session_started_s = 0.0
        self._session_expires_s: float | None = None
        self._receiving: trio.CancelScope | None = None  # the model reader's wait
        self._caller_speaking = False
        self._unknown_seen: set[str] = set()
        self._replacing = trio.Lock()  # one session replacement at a time
        # Timings for the metrics, reported every few seconds (CallProgress).
        self._to_model_timing = Histogram(FAST_BUCKETS_S)
        self._to_caller_timing = Histogram(FAST_BUCKETS_S)
        self._turn_latency = Histogram(SLOW_BUCKETS_S)
        self._barge_ins = 0
        self._turn_began_s: float | None = None  # the caller stopped speaking
        # Barge-in: what the caller heard of each interrupted item, the audio generated
        # for each item, and where each assistant item's words are in the transcript.
        self._heard_ms: dict[str, int] = {}
        self._generated_ms: dict[str, int] = {}
        self._said_at: dict[str, int] = {}
        # Words streamed so far per assistant item: a cancelled response sends no
        # transcript.done, so its words are known only from the deltas.
        self._partial_text: dict[str, str] = {}
        self._response_items: dict[str, list[str]] = {}

    async def run(self, stop: StopSignal, *, task_status: trio.TaskStatus[None]) -> None:
        self._started_at_s = trio.current_time()
        started_at = utc_now()
        # Every record logged by this call's tasks carries its CallSid and project.
        call_context.set((self._setup.call_sid, self._setup.project.id))
        # Started at once: from here the call is this actor's, and a model that cannot be
        # reached ends it politely (the caller told, the record failed with the reason).
        task_status.started()
        self._report(CallBegan(self._setup.project.id))
        try:
            self._model = await self._first_session()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                project = self._setup.project
                self._limits = CallLimits(
                    project.silence_timeout_s, project.max_call_s, self._started_at_s
                )
                nursery.start_soon(self._guard, self._watch_limits, nursery.cancel_scope)
                nursery.start_soon(self._guard, self._renew_sessions, nursery.cancel_scope)
                nursery.start_soon(self._guard, self._pump_twilio, nursery.cancel_scope)
                nursery.start_soon(self._guard, self._pump_model, nursery.cancel_scope)
                with stop.interruptible():
                    await trio.sleep_forever()
                # The engine is stopping (after its drain): a goodbye the caller hears,
                # then the hang-up; the readers end the call once it has played.
                self._hang_up_reason = "engine_stopping"
                await self._create_response(SAY_ENGINE_GOODBYE)
                await trio.sleep(GOODBYE_GRACE_S)
                self._ended = CallEnded("engine_stopping")
                nursery.cancel_scope.cancel()
        except ModelUnavailable as exc:
            log.error("call %s: the model is unreachable: %s", self._setup.call_sid, exc)
            self._openai_alert(AlertLevel.ERROR, "Model unreachable", str(exc))
            self._ended = CallEnded("model_unreachable", failed=True)
        finally:
            with trio.move_on_after(FINALISE_TIMEOUT_S + REST_TIMEOUT_S) as scope:
                scope.shield = True
                if self._model is not None:
                    await self._model.aclose()  # at once: an open model session costs money
                if self._http is not None:
                    await self._http.aclose()
                if self._ended.reason == "transferred":
                    await self._transfer()  # before our socket closes: Twilio takes the call
                elif self._ended.failed and self._ended.reason.startswith("model_"):
                    await self._apologise()
                await self._finalise(started_at)
            self._done.set()

    async def _first_session(self) -> WebSocket:
        """The session opened when the webhook answered, if this instance has it, else a
        new one; configured, then asked to greet."""
        setup = self._setup
        model = await take_early(
            setup.early, setup.call_sid, connect_timeout_s=setup.model.connect_timeout_s
        )
        if model is not None:
            self._early_session = True
            try:
                await self._configure(model)
            except (WebSocketClosed, trio.TooSlowError) as exc:
                log.warning("call %s: early session unusable (%s)", setup.call_sid, exc)
                await model.aclose()
                model = None
        if model is None:
            # The caller hears silence meanwhile: the whole budget is one connect timeout.
            model = await self._new_session(setup.model.connect_timeout_s, FIRST_BACKOFF_S)
        project = setup.project
        greeting = project.greeting or f"Thank you for calling {project.name}. How can I help?"
        await model.send_text(
            encode_response_create(f'Greet the caller. Say exactly: "{greeting}"')
        )
        self._responding = "greeting"
        return model

    async def _new_session(self, budget_s: float, backoff_s: tuple[float, ...]) -> WebSocket:
        """A configured model session: one attempt, then one after each delay of
        ``backoff_s``, within ``budget_s`` in all. ``ModelUnavailable`` with the last
        error when none succeeded."""
        last_error = f"no answer within {budget_s:g} s"
        with trio.move_on_after(budget_s):
            for delay_s in (0.0, *backoff_s):
                await trio.sleep(delay_s)
                began_s = trio.current_time()
                try:
                    model = await open_model_socket(self._setup.model)
                except CONNECT_ERRORS as exc:
                    last_error = _describe(exc)
                    log.warning("call %s: model connection failed: %s", self._setup.call_sid, exc)
                    latency_s = trio.current_time() - began_s
                    self._report(ModelConnected(False, latency_s, last_error))
                    continue
                self._report(ModelConnected(True, trio.current_time() - began_s))
                try:
                    await self._configure(model)
                except (WebSocketClosed, trio.TooSlowError) as exc:
                    last_error = _describe(exc)
                    await model.aclose()
                    continue
                return model
        raise ModelUnavailable(last_error)

    async def _configure(self, model: WebSocket) -> None:
        """This call's session: the project's instructions, tools and voice settings."""
        setup = self._setup
        self._session_started_s = trio.current_time()
        self._session_expires_s = None
        await model.send_text(
            encode_session_update(
                setup.project,
                model=setup.model.model,
                builtin_tools=BUILTIN_TOOLS,
                vad=TurnDetection(
                    threshold=setup.project.vad_threshold,
                    prefix_padding_ms=setup.project.vad_prefix_padding_ms,
                    silence_duration_ms=setup.project.vad_silence_ms,
                ),
            )
        )

    async def _replace_session(self, why: str, current: WebSocket) -> bool:
        """A new session with the conversation so far restored from the transcript, in
        place of ``current`` (dropped, expired, or about to reach its cap). False when
        another task replaced it first; ``ModelUnavailable`` when every attempt failed."""
        async with self._replacing:
            if current is not self._model:
                return False
            await self._replace_locked(why)
            return True

    async def _replace_locked(self, why: str) -> None:
        model = await self._new_session(RECONNECT_BUDGET_S, RECONNECT_BACKOFF_S)
        try:
            for turn in self._transcript:
                restore = encode_user_text if turn["role"] == "caller" else encode_assistant_text
                await model.send_text(restore(str(turn["text"])))
        except (WebSocketClosed, trio.TooSlowError):
            await model.aclose()
            raise ModelUnavailable(f"the new session closed while restoring ({why})") from None
        self._model = model  # the old one is closed by its reader (_pump_model)
        self._responding, self._playback = None, _Playback()
        if self._receiving is not None:
            self._receiving.cancel()  # the old session's reader stops waiting on it
        log.info("call %s: model session replaced (%s)", self._setup.call_sid, why)

    async def _renew_sessions(self) -> None:
        """Renew the model session before its cap (MODEL_SESSION_MAX_S, or the server's
        ``expires_at`` if sooner) at a quiet moment, so a long call never hits the cap.
        This is also the task that reports the call's timings every few seconds: one
        timer task per call instead of two (each task is memory per call)."""
        next_report_s = trio.current_time() + PROGRESS_EVERY_S
        while True:
            renew_at_s, cap_at_s = self._renewal_times()
            now_s = trio.current_time()
            if now_s >= next_report_s:
                self._report(self._progress())
                next_report_s = now_s + PROGRESS_EVERY_S
            if now_s < renew_at_s:
                # Re-read every second: session.created may bring an earlier expiry.
                await trio.sleep_until(min(renew_at_s, now_s + 1.0, next_report_s))
                continue
            # Quiet depends on five pieces of state changed in as many places: a poll
            # a few times a second, for the last minute of a session, is the simple way.
            while not self._quiet() and trio.current_time() < cap_at_s:  # noqa: ASYNC110
                await trio.sleep(QUIET_POLL_S)
            assert self._model is not None
            try:
                renewed = await self._replace_session("session renewal", self._model)
            except ModelUnavailable as exc:
                self._openai_alert(AlertLevel.ERROR, "Model unreachable", str(exc))
                raise CallEnded("model_unreachable", failed=True) from None
            self._renewals += renewed

    def _renewal_times(self) -> tuple[float, float]:
        cap_at_s = self._session_started_s + self._setup.session_max_s
        if self._session_expires_s is not None:
            cap_at_s = min(cap_at_s, self._session_expires_s)
        lifetime_s = cap_at_s - self._session_started_s
        margin_s = min(RENEW_MARGIN_S, RENEW_MARGIN_FRACTION * lifetime_s)
        return cap_at_s - margin_s, cap_at_s

    def _quiet(self) -> bool:
        playback = self._playback
        return (
            self._responding is None
            and not self._caller_speaking
            and not self._tools_running
            and playback.played_ms >= playback.sent_ms
        )

    async def _apologise(self) -> None:
        """The model is gone: the caller hears so and reaches the on-call technician if
        the project has one (Twilio REST; without a Twilio account the stream just ends)."""
        setup = self._setup
        if setup.twilio_rest is None:
            return
        try:
            async with httpx.AsyncClient(verify=client_context()) as client:
                twiml = turn_away(SORRY_MODEL_DOWN, setup.project.on_call_number)
                await setup.twilio_rest.update_call(client, setup.call_sid, twiml)
        except TwilioRestError as exc:
            log.error("call %s: could not tell the caller: %s", setup.call_sid, exc)

    def _report(self, sample: MetricsSample) -> None:
        if self._setup.metrics is not None:
            self._setup.metrics.send_nowait(sample)

    def _progress(self) -> CallProgress:
        barge_ins, self._barge_ins = self._barge_ins, 0
        return CallProgress(
            self._setup.project.id,
            self._to_model_timing.take(),
            self._to_caller_timing.take(),
            self._turn_latency.take(),
            barge_ins,
        )

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
                self._ended = self._twilio_closed(closed)
            else:
                reason = f"model_disconnected: {closed.reason or closed.code}"
                self._ended = CallEnded(reason, failed=True)
        except trio.TooSlowError:
            self._ended = CallEnded("peer_not_reading", failed=True)
        else:
            return
        scope.cancel()

    def _twilio_closed(self, closed: WebSocketClosed) -> CallEnded:
        """Twilio's socket closed: a hang-up, unless we closed it over a frame we could
        not accept (too big, not UTF-8, not WebSocket): then the call failed."""
        if closed.code in _PROTOCOL_CLOSE_CODES:
            log.error("call %s: Twilio stream closed: %s", self._setup.call_sid, closed)
            return CallEnded(f"twilio_stream_error: {closed.code} {closed.reason}", failed=True)
        return CallEnded("caller_hung_up")

    # -- caller -> model ------------------------------------------------------------------

    async def _pump_twilio(self) -> None:
        assert self._model is not None
        while True:
            batch = await self._twilio.receive_batch()
            read_at_s = trio.current_time()
            for message in batch:
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
                    self._to_model_timing.observe(trio.current_time() - read_at_s)
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
                elif isinstance(event, UnknownEvent) and event.event not in self._unknown_seen:
                    self._unknown_seen.add(event.event)  # once per name: no log flood
                    log.info("call %s: ignoring Twilio event %r", self._setup.call_sid, event.event)

    def _heard(self, mark: str) -> None:
        item_id, _, ms = mark.rpartition(":")
        if item_id == self._playback.item_id and ms.isdigit():
            self._playback.played_ms = max(self._playback.played_ms, int(ms))

    # -- model -> caller ------------------------------------------------------------------

    async def _pump_model(self) -> None:
        while True:
            model = self._model
            assert model is not None
            try:
                await self._read_model(model)
            except WebSocketClosed as closed:
                if model is self._model:  # not replaced on purpose: the session is lost
                    log.warning("call %s: model socket lost (%s)", self._setup.call_sid, closed)
                    self._openai_alert(AlertLevel.WARNING, "Model connection dropped", str(closed))
                    await self._reconnect(str(closed), model)
            if model is not self._model:
                await model.aclose()  # replaced: only this reader ever read from it

    async def _reconnect(self, why: str, model: WebSocket) -> None:
        try:
            replaced = await self._replace_session(why, model)
        except ModelUnavailable as exc:
            self._openai_alert(AlertLevel.ERROR, "Model unreachable", str(exc))
            raise CallEnded(f"model_disconnected: {why}", failed=True) from None
        self._reconnects += replaced

    async def _read_model(self, model: WebSocket) -> None:
        """Handle the session's events until it closes or is replaced."""
        while model is self._model:
            with trio.CancelScope() as self._receiving:
                batch = await model.receive_batch()
            self._receiving = None
            read_at_s = trio.current_time()
            if model is not self._model:
                return
            for message in batch:
                try:
                    event = decode_server_event(message)
                except RealtimeProtocolError as exc:
                    log.warning("call %s: bad Realtime frame: %s", self._setup.call_sid, exc)
                    continue
                if isinstance(event, AudioDelta):
                    self._activity(caller=False)
                    delta_ms = _audio_ms(event.delta)
                    generated = self._generated_ms
                    generated[event.item_id] = generated.get(event.item_id, 0) + delta_ms
                    await self._play(event, delta_ms)
                    self._to_caller_timing.observe(trio.current_time() - read_at_s)
                elif isinstance(event, SpeechStarted):
                    self._caller_speaking = True
                    self._activity(caller=True)
                    await self._barge_in()
                elif isinstance(event, SpeechStopped):
                    self._caller_speaking = False
                    self._turn_began_s = read_at_s
                    self._activity(caller=True)
                elif isinstance(event, TranscriptDelta):
                    self._words_streamed(event)
                elif isinstance(event, TranscriptDone):
                    self._partial_text.pop(event.item_id, None)
                    self._assistant_said(event.item_id, event.transcript)
                elif isinstance(event, CallerTranscript):
                    self._say("caller", event.transcript)
                elif isinstance(event, FunctionCallDone):
                    self._pending_calls.setdefault(event.response_id, []).append(event)
                elif isinstance(event, ResponseCreated):
                    self._responding = event.response.id
                elif isinstance(event, ResponseDone):
                    await self._response_done(event)
                elif isinstance(event, SessionCreated):
                    self._note_expiry(event.session)
                elif isinstance(event, ServerError) and not event.benign:
                    code = event.error.code or event.error.type
                    if code in SESSION_GONE_CODES:  # the cap came before our renewal
                        self._openai_alert(
                            AlertLevel.WARNING, "Model session expired", event.error.message
                        )
                        await self._reconnect(code, model)
                        return
                    if event.fatal:
                        log.error(
                            "call %s: model error %s", self._setup.call_sid, event.error.message
                        )
                        raise CallEnded(f"model_error: {code}", True)
                    # Recoverable: the session stays open, and so does the call.
                    log.warning(
                        "call %s: model error %s (%s), the call goes on",
                        self._setup.call_sid,
                        code,
                        event.error.message,
                    )
                    self._openai_alert(
                        AlertLevel.WARNING, "Model error", f"{code}: {event.error.message}"
                    )

    def _words_streamed(self, event: TranscriptDelta) -> None:
        item_id = event.item_id
        if item_id not in self._partial_text:
            self._partial_text[item_id] = ""
            self._response_items.setdefault(event.response_id, []).append(item_id)
        self._partial_text[item_id] += event.delta

    def _assistant_said(self, item_id: str, text: str) -> None:
        self._said_at[item_id] = len(self._transcript)
        self._say("assistant", text)
        self._trim_to_heard(item_id)

    def _note_expiry(self, session: dict[str, Any]) -> None:
        """``expires_at`` (unix seconds) in the server's session, on the Trio clock."""
        expires_at = session.get("expires_at")
        if isinstance(expires_at, int | float) and not isinstance(expires_at, bool):
            remaining_s = float(expires_at) - time.time()
            if remaining_s > 0:
                self._session_expires_s = trio.current_time() + remaining_s

    def _trim_to_heard(self, item_id: str) -> None:
        """An interrupted item's words, cut to the share of its audio the caller heard
        (the model's transcript covers everything it generated)."""
        if item_id not in self._heard_ms or item_id not in self._said_at:
            return
        index = self._said_at.pop(item_id)
        generated_ms = max(self._generated_ms.get(item_id, 0), 1)
        share = min(1.0, self._heard_ms[item_id] / generated_ms)
        turn = self._transcript[index]
        words = str(turn["text"]).split()
        turn["text"] = " ".join(words[: round(len(words) * share)])
        turn["interrupted"] = True

    async def _play(self, delta: AudioDelta, delta_ms: int) -> None:
        playback = self._playback
        if delta.response_id in playback.dropped_responses:
            return  # interrupted: the caller must not hear the rest
        if delta.item_id != playback.item_id:
            playback.item_id, playback.sent_ms, playback.played_ms = delta.item_id, 0, 0
        playback.response_id = delta.response_id
        if self._first_audio_ms is None:
            self._first_audio_ms = int((trio.current_time() - self._started_at_s) * 1000)
        if self._turn_began_s is not None:  # the answer to the caller's turn begins
            self._turn_latency.observe(trio.current_time() - self._turn_began_s)
            self._turn_began_s = None
        stream_sid = self._setup.stream_sid
        await self._twilio.send_text(encode_media(stream_sid, delta.delta))
        playback.sent_ms += delta_ms
        await self._twilio.send_text(encode_mark(stream_sid, f"{delta.item_id}:{playback.sent_ms}"))

    async def _barge_in(self) -> None:
        playback = self._playback
        if not playback.item_id or playback.played_ms >= playback.sent_ms:
            return  # nothing is playing: the caller is simply taking their turn
        assert self._model is not None
        # Deltas of this response may still be on their way: the caller must not hear them.
        playback.dropped_responses.add(playback.response_id)
        self._barge_ins += 1
        self._heard_ms[playback.item_id] = playback.played_ms
        self._trim_to_heard(playback.item_id)  # if its transcript is already in
        await self._twilio.send_text(encode_clear(self._setup.stream_sid))
        await self._to_model(encode_truncate(playback.item_id, playback.played_ms))
        playback.sent_ms = playback.played_ms  # what was cleared will never be heard

    async def _response_done(self, done: ResponseDone) -> None:
        self._responding = None
        for item_id in self._response_items.pop(done.response.id, []):
            text = self._partial_text.pop(item_id, None)
            if text is not None:  # cancelled before its transcript.done: what was streamed
                self._assistant_said(item_id, text.strip())
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
        if self._http is None:  # made on first use: most calls never need one
            self._http = httpx.AsyncClient(verify=client_context())
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
        self._report(FunctionCalled(setup.project.id, result.outcome, result.latency_ms / 1000))
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
            async with httpx.AsyncClient(verify=client_context()) as client:
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
        log.info(
            "call %s ended (%s); early session %s, %d session renewal(s)",
            self._setup.call_sid,
            ended.reason,
            "used" if self._early_session else "not used",
            self._renewals,
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
            cost_usd=call_cost_usd(self._usage, duration_s, self._setup.prices),
            time_to_first_audio_ms=self._first_audio_ms,
            stream_sid=self._setup.stream_sid,
        )
        await self._store.send(record)
        self._report(self._progress())
        self._report(
            CallFinished(
                self._setup.project.id,
                "failed" if ended.failed else "completed",
                ended.reason,
                duration_s,
                None if self._first_audio_ms is None else self._first_audio_ms / 1000,
                self._reconnects,
                self._renewals,
            )
        )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "no answer in time"
    return str(exc) or type(exc).__name__


def _audio_ms(delta_b64: str) -> int:
    """Milliseconds of 8 kHz mu-law in a base64 payload (8 bytes per ms)."""
    padding = delta_b64.count("=", -2)
    return (len(delta_b64) * 3 // 4 - padding) // 8
