"""The call actor: one per live call, between the caller (Twilio) and the model.

A thin shell around the pure conversation core (actors/call/core.py): it owns the call's
two sockets, its timers and tasks, feeds the core every event and does what the core
says. Two readers, one per socket, and nothing else on the per-frame path: each reader
handles every message one read delivers and writes straight to the other socket (no
channel, no task per frame); caller audio goes to the model as Twilio sent it
(``audio/pcmu`` both ways), and after each audio delta a Twilio ``mark`` tells, once
echoed, how much the caller has heard.

Within a call one failure ends the call (a plain nursery: one cancels all); the calls
group reports it and never restarts it. The record is finalised exactly once, in
``finally``, after the model socket is closed (a leaked model session costs money); an
actor that crashes records the call ``failed`` with the error.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import trio

from actors.call.core import (
    Action,
    CallCore,
    ClearCaller,
    End,
    Expiry,
    Note,
    Replace,
    RunTools,
    ScheduleRetry,
    Send,
)
from actors.call.functions import BusinessFunctions
from actors.call.limits import (
    SAY_DURATION_GOODBYE,
    SAY_SILENCE_GOODBYE,
    SAY_STILL_THERE,
    SAY_WRAP_UP,
    CallLimits,
)
from actors.call.record import call_record
from actors.call.responses import Request
from actors.call.session import (
    FIRST_BACKOFF_S,
    RECONNECT_BACKOFF_S,
    RECONNECT_BUDGET_S,
    ModelUnavailable,
    configure,
    new_session,
)
from actors.call.setup import CallEnded, CallSetup
from actors.call.tools import BUILTIN_NAMES, ToolCall, run_builtin
from actors.call.twilio_side import apologise, transfer_call
from actors.early_sessions import take_early
from actors.twilio_rest import REST_TIMEOUT_S
from engine.config import AlertLevel
from engine.histogram import FAST_BUCKETS_S, SLOW_BUCKETS_S, Histogram
from engine.logs import call_context
from engine.messages import Alert, utc_now
from engine.metric_samples import CallBegan, CallFinished, CallProgress, MetricsSample
from engine.realtime_codec import AudioDelta, RealtimeProtocolError, decode_server_event
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
from engine.ws import WebSocket, WebSocketClosed

if TYPE_CHECKING:
    from engine.lifecycle import StopSignal
    from engine.mailbox import Outbox
    from engine.messages import StoreWrite

__all__ = ["STOP_BUDGET_S", "CallActor", "CallSetup"]

log = logging.getLogger("afterhours.call")

FINALISE_TIMEOUT_S = 2.0
GOODBYE_GRACE_S = 10.0
# What a call needs once asked to stop: its goodbye heard, the record and a REST update.
STOP_BUDGET_S = GOODBYE_GRACE_S + FINALISE_TIMEOUT_S + REST_TIMEOUT_S
# A business function slower than this gets a short "one moment" from the model.
FILLER_AFTER_S = 1.0
FILLER_INSTRUCTIONS = (
    'Tell the caller in a few words that you are checking. Say: "One moment, let me check."'
)
SAY_CALL_BACK = (
    "The transfer did not go through. Say: \"I'm sorry, I could not connect you. "
    'The on-call technician will call you back as soon as possible. Goodbye."'
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
_LOG_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_ALERT_LEVELS = {"info": AlertLevel.INFO, "warning": AlertLevel.WARNING, "error": AlertLevel.ERROR}

# Close codes the WebSocket layer sends when the peer broke the protocol (RFC 6455 7.4.1):
# 1002 protocol error, 1007 invalid data, 1008 policy (a ping flood, a peer that stopped
# reading: engine/ws.py), 1009 message too big.
_PROTOCOL_CLOSE_CODES = frozenset({1002, 1007, 1008, 1009})


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
        self._core = CallCore(voice=setup.project.voice, started_at_s=0.0)
        self._functions = BusinessFunctions(setup, store, alerts)
        self._intent: Literal["emergency", "routine", "unknown"] | None = None
        self._started_at_s = 0.0
        self._first_audio_ms: int | None = None
        self._ended = CallEnded("caller_hung_up")
        self._nursery: trio.Nursery | None = None
        self._limits: CallLimits | None = None
        self._hang_up_reason: str | None = None  # hang up once the last words have played
        self._transferring = False
        self._transfer_error: str | None = None
        self._reconnects = 0
        self._renewals = 0
        self._frames_dropped = 0
        self._early_session = False
        self._session_started_s = 0.0
        self._session_expires_s: float | None = None
        self._receiving: trio.CancelScope | None = None  # the model reader's wait
        self._unknown_seen: set[str] = set()
        self._replacing = trio.Lock()  # one session replacement at a time
        # Timings for the metrics, reported every few seconds (CallProgress).
        self._to_model_timing = Histogram(FAST_BUCKETS_S)
        self._to_caller_timing = Histogram(FAST_BUCKETS_S)
        self._turn_latency = Histogram(SLOW_BUCKETS_S)
        self._barge_ins = 0
        self._turn_began_s: float | None = None  # the caller stopped speaking

    async def run(self, stop: StopSignal, *, task_status: trio.TaskStatus[None]) -> None:
        self._started_at_s = trio.current_time()
        self._core = CallCore(voice=self._setup.project.voice, started_at_s=self._started_at_s)
        started_at = utc_now()
        # Every record logged by this call's tasks carries its CallSid and project.
        call_context.set((self._setup.call_sid, self._setup.project.id))
        # Started at once: from here the call is this actor's, and a model that cannot be
        # reached ends it politely (the caller told, the record failed with the reason).
        task_status.started()
        self._report(CallBegan(self._setup.project.id))
        try:
            await self._first_session()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                project = self._setup.project
                self._limits = CallLimits(
                    project.silence_timeout_s, project.max_call_s, self._started_at_s
                )
                for task in (self._watch_limits, self._renew_sessions, self._pump_twilio,
                             self._pump_model):  # fmt: skip
                    nursery.start_soon(self._guard, task, nursery.cancel_scope)
                with stop.interruptible():
                    await trio.sleep_forever()
                # The engine is stopping (after its drain): a goodbye the caller hears,
                # then the hang-up; the readers end the call once it has played.
                self._hang_up_reason = "engine_stopping"
                await self._do(self._core.ask(Request(SAY_ENGINE_GOODBYE, purpose="goodbye")))
                await trio.sleep(GOODBYE_GRACE_S)
                self._ended = CallEnded("engine_stopping")
                nursery.cancel_scope.cancel()
        except ModelUnavailable as exc:
            log.error("call %s: the model is unreachable: %s", self._setup.call_sid, exc)
            self._openai_alert(AlertLevel.ERROR, "Model unreachable", str(exc))
            self._ended = CallEnded(
                "model_unreachable", failed=True, error=f"model_unreachable: {exc}"
            )
        except Exception as exc:
            # A bug in this call: its record still says what happened, then the calls
            # group reports the crash (it never restarts a call).
            self._ended = CallEnded("engine_error", failed=True, error=f"{type(exc).__name__}")
            raise
        finally:
            with trio.move_on_after(FINALISE_TIMEOUT_S + REST_TIMEOUT_S) as scope:
                scope.shield = True
                if self._model is not None:
                    await self._model.aclose()  # at once: an open model session costs money
                await self._functions.finish()
                if self._ended.failed and self._ended.reason.startswith("model_"):
                    await apologise(self._setup)
                await self._finalise(started_at)
            self._done.set()

    async def _first_session(self) -> None:
        """The session opened when the webhook answered, if this instance has it, else a
        new one; configured, then asked to greet."""
        setup = self._setup
        model = await take_early(
            setup.early, setup.call_sid, connect_timeout_s=setup.model.connect_timeout_s
        )
        if model is not None:
            self._early_session = True
            try:
                await configure(model, setup, self._core.ids.new("s"))
            except (WebSocketClosed, trio.TooSlowError, trio.BrokenResourceError) as exc:
                log.warning("call %s: early session unusable (%s)", setup.call_sid, exc)
                await model.aclose()
                model = None
        if model is None:
            # The caller hears silence meanwhile: the whole budget is one connect timeout.
            model = await self._new_session(setup.model.connect_timeout_s, FIRST_BACKOFF_S)
        self._model = model
        self._session_started_s, self._session_expires_s = trio.current_time(), None
        project = setup.project
        greeting = project.greeting or f"Thank you for calling {project.name}. How can I help?"
        instructions = f'Greet the caller. Say exactly: "{greeting}"'
        await self._do(self._core.ask(Request(instructions, purpose="greeting")))

    async def _new_session(self, budget_s: float, backoff_s: tuple[float, ...]) -> WebSocket:
        return await new_session(
            self._setup,
            budget_s,
            backoff_s,
            event_id=partial(self._core.ids.new, "s"),
            report=self._report,
        )

    # -- doing what the core says ------------------------------------------------------------

    async def _do(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                await self._to_model(action.data)
            elif isinstance(action, ClearCaller):
                self._barge_ins += 1
                await self._twilio.send_text(encode_clear(self._setup.stream_sid))
            elif isinstance(action, RunTools):
                self._start(partial(self._run_tools, action.calls))
            elif isinstance(action, ScheduleRetry):
                self._start(partial(self._retry, action))
            elif isinstance(action, Note):
                self._note(action)
            elif isinstance(action, Expiry):
                self._session_expires_s = trio.current_time() + action.remaining_s
            elif isinstance(action, End):
                raise CallEnded(action.reason, action.failed)
            elif isinstance(action, Replace):
                assert self._model is not None
                await self._reconnect(action.why, self._model)
                return  # what followed was for the old session

    def _start(self, work: Any) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._guard, work, self._nursery.cancel_scope)

    def _note(self, note: Note) -> None:
        log.log(_LOG_LEVELS[note.level], "call %s: %s: %s", self._setup.call_sid, note.title,
                note.message)  # fmt: skip
        if note.alert:
            self._openai_alert(_ALERT_LEVELS[note.level], note.title, note.message)

    async def _retry(self, action: ScheduleRetry) -> None:
        await trio.sleep(action.retry.after_s)
        await self._do(self._core.retry_due(action.retry))

    async def _run_tools(self, calls: tuple[ToolCall, ...]) -> None:
        """The tool calls of one response, in order; their outputs, then one response.
        A business function that takes longer than ``FILLER_AFTER_S`` gets a short
        "one moment" from the model, so the caller never sits in dead air."""
        for call in calls:
            if call.name in BUILTIN_NAMES:
                output = self._run_builtin(call)
            elif not call.name:
                log.error("call %s: a function call without a name (%s)",
                          self._setup.call_sid, call.call_id)  # fmt: skip
                output = '{"error": "the function call had no name"}'
            else:
                output = await self._run_function_with_filler(call)
            await self._do([self._core.tool_output(call, output)])
        if self._hang_up_reason is not None:
            # end_call or a transfer: the last words were said before the tool call.
            await self._do(self._core.tools_done(answer=False))
            await self._maybe_hang_up()
            return
        await self._do(self._core.tools_done())

    async def _run_function_with_filler(self, call: ToolCall) -> str:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._filler_if_slow)
            output = await self._functions.run(call)
            nursery.cancel_scope.cancel()
        return output

    async def _filler_if_slow(self) -> None:
        await trio.sleep(FILLER_AFTER_S)
        with trio.CancelScope(shield=True):  # never half-send a frame
            await self._do(self._core.ask(Request(FILLER_INSTRUCTIONS, purpose="filler")))

    def _run_builtin(self, call: ToolCall) -> str:
        setup = self._setup
        result = run_builtin(
            call,
            on_call_number=setup.project.on_call_number,
            can_transfer=setup.twilio_rest is not None,
        )
        if result.intent is not None:
            self._intent = result.intent
        if result.hang_up is not None:
            self._hang_up_reason = result.hang_up
        if call.name == "transfer_to_on_call" and result.hang_up is None:
            self._transfer_failed("; ".join(_error_of(result.output)))
        return result.output

    def _transfer_failed(self, error: str) -> None:
        """A transfer that did not happen is on the record and an alert, never silent."""
        log.error("call %s: transfer not possible: %s", self._setup.call_sid, error)
        self._transfer_error = error
        self._alerts.send_nowait(
            Alert(
                AlertLevel.ERROR,
                "twilioError",
                "Transfer failed",
                error,
                project_id=self._setup.project.id,
                call_sid=self._setup.call_sid,
            )
        )

    async def _maybe_hang_up(self) -> None:
        """End the call once a pending hang-up's last words have been heard; a transfer
        is made then, while the model is still there to explain if it fails."""
        core = self._core
        reason = self._hang_up_reason
        if reason is None or not core.responses.idle or not core.playback.drained:
            return
        if reason != "transferred":
            if self._transfer_error is not None:
                raise CallEnded("transfer_failed", failed=True, error=self._transfer_error)
            raise CallEnded(reason)
        if not self._transferring:
            self._transferring = True
            self._start(self._transfer)

    async def _transfer(self) -> None:
        error = await transfer_call(self._setup)
        if error is None:
            raise CallEnded("transferred")  # Twilio now ends our stream itself
        self._transfer_failed(error)
        # The caller hears they will be called back; the call then ends as after any
        # goodbye, or after GOODBYE_GRACE_S if that never finishes playing.
        self._hang_up_reason = "transfer_failed"
        await self._do(self._core.ask(Request(SAY_CALL_BACK, purpose="goodbye")))
        await trio.sleep(GOODBYE_GRACE_S)
        raise CallEnded("transfer_failed", failed=True, error=error)

    def _activity(self, *, caller: bool) -> None:
        if self._limits is not None:
            self._limits.activity(trio.current_time(), caller=caller)

    async def _watch_limits(self) -> None:
        """Silence and duration limits (actors/call/limits.py); a goodbye that never
        finishes playing still ends the call after ``GOODBYE_GRACE_S``."""
        limits = self._limits
        assert limits is not None
        while True:
            await trio.sleep_until(limits.next_check_s())
            action = limits.due(trio.current_time())
            if action == "prompt_silence":
                await self._do(self._core.ask(Request(SAY_STILL_THERE, purpose="prompt")))
            elif action == "warn_duration":
                await self._do(self._core.ask(Request(SAY_WRAP_UP, purpose="prompt")))
            elif action in ("end_silence", "end_duration"):
                reason = "silence_timeout" if action == "end_silence" else "max_duration"
                self._hang_up_reason = reason
                goodbye = SAY_SILENCE_GOODBYE if action == "end_silence" else SAY_DURATION_GOODBYE
                await self._do(self._core.ask(Request(goodbye, purpose="goodbye")))
                await trio.sleep(GOODBYE_GRACE_S)
                raise CallEnded(reason)

    # -- sessions ----------------------------------------------------------------------------

    async def _replace_session(self, why: str, current: WebSocket) -> bool:
        """A new session with the conversation so far restored from the transcript, in
        place of ``current`` (dropped, expired, or about to reach its cap). False when
        another task replaced it first; ``ModelUnavailable`` when every attempt failed."""
        async with self._replacing:
            if current is not self._model:
                return False
            model = await self._new_session(RECONNECT_BUDGET_S, RECONNECT_BACKOFF_S)
            try:
                for action in self._core.restored():
                    if isinstance(action, Send):
                        await model.send_text(action.data)
            except (WebSocketClosed, trio.TooSlowError, trio.BrokenResourceError):
                await model.aclose()
                raise ModelUnavailable(f"the new session closed while restoring ({why})") from None
            self._model = model  # the old one is closed by its reader (_pump_model)
            self._session_started_s, self._session_expires_s = trio.current_time(), None
            if self._receiving is not None:
                self._receiving.cancel()  # the old session's reader stops waiting on it
            log.info("call %s: model session replaced (%s)", self._setup.call_sid, why)
            return True

    async def _reconnect(self, why: str, model: WebSocket) -> None:
        try:
            replaced = await self._replace_session(why, model)
        except ModelUnavailable as exc:
            self._openai_alert(AlertLevel.ERROR, "Model unreachable", str(exc))
            raise CallEnded(f"model_disconnected: {why}", failed=True) from None
        self._reconnects += replaced

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
            # Quiet depends on state changed in many places: a poll a few times a
            # second, for the last minute of a session, is the simple way.
            while not self._core.quiet and trio.current_time() < cap_at_s:  # noqa: ASYNC110
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

    # -- plumbing ----------------------------------------------------------------------------

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
            level, "openaiError", title, message, project_id=setup.project.id,
            call_sid=setup.call_sid,
        )  # fmt: skip
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

    # -- caller -> model ---------------------------------------------------------------------

    async def _pump_twilio(self) -> None:
        core = self._core
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
                    await self._to_model(core.caller_audio(event.media.payload))
                    self._to_model_timing.observe(trio.current_time() - read_at_s)
                elif isinstance(event, Mark):
                    core.mark(event.mark.name)
                    self._activity(caller=False)  # the model's words are still playing
                    await self._maybe_hang_up()
                elif isinstance(event, Dtmf):
                    text = f"The caller pressed {event.dtmf.digit} on the keypad."
                    await self._to_model(core.caller_text(text))
                    await self._do(core.ask(Request(purpose="keypad")))
                elif isinstance(event, Stop):
                    raise CallEnded("caller_hung_up")
                elif isinstance(event, UnknownEvent) and event.event not in self._unknown_seen:
                    self._unknown_seen.add(event.event)  # once per name: no log flood
                    log.info("call %s: ignoring Twilio event %r", self._setup.call_sid, event.event)

    # -- model -> caller ---------------------------------------------------------------------

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

    async def _read_model(self, model: WebSocket) -> None:
        """Handle the session's events until it closes or is replaced."""
        core = self._core
        while model is self._model:
            with trio.CancelScope() as self._receiving:
                batch = await model.receive_batch()
            self._receiving = None
            read_at_s = trio.current_time()
            for message in batch:
                if model is not self._model:
                    return  # replaced while handling this batch: the rest is the old one's
                try:
                    event = decode_server_event(message)
                except RealtimeProtocolError as exc:
                    log.warning("call %s: bad Realtime frame: %s", self._setup.call_sid, exc)
                    continue
                if isinstance(event, AudioDelta):
                    await self._play(event, read_at_s)
                    continue
                caller_was_speaking = core.caller_speaking
                await self._do(core.event(event, trio.current_time(), time.time()))
                if core.caller_speaking != caller_was_speaking:
                    self._activity(caller=True)
                    if not core.caller_speaking:
                        self._turn_began_s = read_at_s
                await self._maybe_hang_up()

    async def _play(self, delta: AudioDelta, read_at_s: float) -> None:
        self._activity(caller=False)
        mark = self._core.audio(delta, _audio_ms(delta.delta))
        if mark is None:
            return  # interrupted: the caller must not hear the rest
        now_s = trio.current_time()
        if self._first_audio_ms is None:
            self._first_audio_ms = int((now_s - self._started_at_s) * 1000)
        if self._turn_began_s is not None:  # the answer to the caller's turn begins
            self._turn_latency.observe(now_s - self._turn_began_s)
            self._turn_began_s = None
        stream_sid = self._setup.stream_sid
        await self._twilio.send_text(encode_media(stream_sid, delta.delta))
        await self._twilio.send_text(encode_mark(stream_sid, mark))
        self._to_caller_timing.observe(trio.current_time() - read_at_s)

    # -- the record --------------------------------------------------------------------------

    async def _finalise(self, started_at: Any) -> None:
        ended, setup, core = self._ended, self._setup, self._core
        if self._reconnects:
            log.warning(
                "call %s: %d model reconnect(s); %d caller frame(s) dropped meanwhile",
                setup.call_sid, self._reconnects, self._frames_dropped,
            )  # fmt: skip
        log.info(
            "call %s ended (%s); early session %s, %d session renewal(s), model errors %s",
            setup.call_sid, ended.reason, "used" if self._early_session else "not used",
            self._renewals, core.errors_by_class or "none",
        )  # fmt: skip
        duration_s = trio.current_time() - self._started_at_s
        record = call_record(
            setup, core, ended, intent=self._intent, started_at=started_at,
            duration_s=duration_s, first_audio_ms=self._first_audio_ms,
        )  # fmt: skip
        await self._store.send(record)
        self._report(self._progress())
        first_audio_s = None if self._first_audio_ms is None else self._first_audio_ms / 1000
        status: Literal["completed", "failed"] = "failed" if ended.failed else "completed"
        self._report(
            CallFinished(
                setup.project.id,
                status,
                ended.reason,
                duration_s,
                first_audio_s,
                self._reconnects,
                self._renewals,
            )
        )


def _error_of(output: str) -> list[str]:
    """The ``error`` of a tool output (a JSON object), for the log and the alert."""
    import msgspec

    try:
        value = msgspec.json.decode(output)
    except msgspec.DecodeError:
        return [output]
    return [str(value.get("error"))] if isinstance(value, dict) and "error" in value else []


def _audio_ms(delta_b64: str) -> int:
    """Milliseconds of 8 kHz mu-law in a base64 payload (8 bytes per ms)."""
    padding = delta_b64.count("=", -2)
    return (len(delta_b64) * 3 // 4 - padding) // 8
