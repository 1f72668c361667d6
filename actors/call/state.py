"""The call actor's state and plumbing, shared by its parts (actors/call/actor.py puts
them together): the sockets, the core, the limits, and the small helpers every part uses
(starting a task, logging a note, reporting a metric, sending to the model)."""

from __future__ import annotations

import abc
import logging
from typing import TYPE_CHECKING, Any, Literal

import trio

from actors.call.core import (
    Action,
    CallCore,
    Note,
)
from actors.call.functions import BusinessFunctions
from actors.call.setup import CallEnded, CallSetup
from actors.twilio_rest import REST_TIMEOUT_S
from engine.alert_level import AlertLevel
from engine.histogram import FAST_BUCKETS_S, SLOW_BUCKETS_S, Histogram
from engine.messages import Alert
from engine.metric_samples import CallProgress, MetricsSample
from engine.ws import WebSocket, WebSocketClosed

if TYPE_CHECKING:
    from actors.call.limits import CallLimits
    from engine.mailbox import Outbox
    from engine.messages import StoreWrite


log = logging.getLogger("afterhours.call")

_LOG_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_ALERT_LEVELS = {"info": AlertLevel.INFO, "warning": AlertLevel.WARNING, "error": AlertLevel.ERROR}

# Close codes the WebSocket layer sends when the peer broke the protocol (RFC 6455 7.4.1):
# 1002 protocol error, 1007 invalid data, 1008 policy (a ping flood, a peer that stopped
# reading: engine/ws.py), 1009 message too big.
_PROTOCOL_CLOSE_CODES = frozenset({1002, 1007, 1008, 1009})


class CallState(abc.ABC):
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
        # Set once the transfer request has its answer: Twilio may end our stream
        # before that answer reaches us, and that end is the transfer, not a hang-up.
        self._transfer_settled = trio.Event()
        self._reconnects = 0
        self._renewals = 0
        self._frames_dropped = 0
        self._early_session = False
        self._session_started_s = 0.0
        self._session_expires_s: float | None = None
        self._receiving: trio.CancelScope | None = None  # the model reader's wait
        self._unknown_seen: set[str] = set()
        # The per-frame levers (CALLER_FRAMES_PER_APPEND, MARK_EVERY_DELTAS): caller
        # payloads held for the next append, and the latest mark not yet sent.
        self._held_audio: list[str] = []
        self._unmarked: str | None = None
        self._deltas_unmarked = 0
        self._replacing = trio.Lock()  # one session replacement at a time
        # Timings for the metrics, reported every few seconds (CallProgress).
        self._to_model_timing = Histogram(FAST_BUCKETS_S)
        self._to_caller_timing = Histogram(FAST_BUCKETS_S)
        self._turn_latency = Histogram(SLOW_BUCKETS_S)
        self._barge_ins = 0
        self._turn_began_s: float | None = None  # the caller stopped speaking
        self._quiet: trio.Event | None = None  # a renewal waiting for a quiet moment

    def _changed(self) -> None:
        """The core's state may have changed: a renewal waiting for the call to go quiet
        is woken the moment it has (one None check when nobody waits: the frame path)."""
        if self._quiet is not None and self._core.quiet:
            self._quiet.set()

    def _start(self, work: Any) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._guard, work, self._nursery.cancel_scope)

    def _note(self, note: Note) -> None:
        log.log(_LOG_LEVELS[note.level], "call %s: %s: %s", self._setup.call_sid, note.title,
                note.message)  # fmt: skip
        if note.alert:
            self._openai_alert(_ALERT_LEVELS[note.level], note.title, note.message)

    def _activity(self, *, caller: bool) -> None:
        if self._limits is not None:
            self._limits.activity(trio.current_time(), caller=caller)

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

    async def _to_model(self, messages: list[bytes]) -> None:
        """Send to the model, in one write; while its socket is being replaced the
        frames are dropped (the model reader handles the reconnect)."""
        assert self._model is not None
        try:
            await self._model.send_many(messages)
        except WebSocketClosed:
            self._frames_dropped += len(messages)

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

    async def _twilio_ended(self, ended: CallEnded) -> CallEnded:
        """Twilio ended the stream. While our transfer request is in flight that is most
        likely the transfer itself (Twilio ends the stream when it runs the new TwiML,
        often before its REST answer reaches us): wait for the answer, bounded by the
        request's own timeout, and record what it says."""
        if not self._transferring:
            return ended
        with trio.move_on_after(REST_TIMEOUT_S + 1.0):
            await self._transfer_settled.wait()
        if self._transfer_settled.is_set() and self._transfer_error is None:
            return CallEnded("transferred")
        return ended

    def _twilio_closed(self, closed: WebSocketClosed) -> CallEnded:
        """Twilio's socket closed: a hang-up, unless we closed it over a frame we could
        not accept (too big, not UTF-8, not WebSocket): then the call failed."""
        if closed.code in _PROTOCOL_CLOSE_CODES:
            log.error("call %s: Twilio stream closed: %s", self._setup.call_sid, closed)
            return CallEnded(f"twilio_stream_error: {closed.code} {closed.reason}", failed=True)
        return CallEnded("caller_hung_up")

    # Parts of the actor that live in the other modules (conduct, sessions, readers).
    @abc.abstractmethod
    async def _do(self, actions: list[Action]) -> None: ...

    @abc.abstractmethod
    async def _maybe_hang_up(self) -> None: ...

    @abc.abstractmethod
    async def _reconnect(self, why: str, model: WebSocket) -> None: ...

    @abc.abstractmethod
    async def _pump_twilio(self) -> None: ...
