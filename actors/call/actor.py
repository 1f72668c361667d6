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
from typing import TYPE_CHECKING, Any, Literal

import trio

from actors.call.core import CallCore
from actors.call.limits import CallLimits
from actors.call.record import call_record
from actors.call.responses import Request
from actors.call.session import ModelUnavailable
from actors.call.setup import CallEnded, CallSetup
from actors.call.twilio_side import apologise
from actors.twilio_rest import REST_TIMEOUT_S
from engine.alert_level import AlertLevel
from engine.logs import call_context
from engine.mailbox import RECORD_SEND_TIMEOUT_S
from engine.messages import utc_now
from engine.metric_samples import CallBegan, CallFinished

if TYPE_CHECKING:
    from engine.lifecycle import StopSignal


from actors.call.conduct import GOODBYE_GRACE_S, Conduct
from actors.call.readers import Readers
from actors.call.sessions import Sessions

__all__ = ["STOP_BUDGET_S", "CallActor", "CallSetup"]

log = logging.getLogger("afterhours.call")

FINALISE_TIMEOUT_S = RECORD_SEND_TIMEOUT_S  # the call's record waits as any record does
# What a call needs once asked to stop: its goodbye heard, the record and a REST update.
STOP_BUDGET_S = GOODBYE_GRACE_S + FINALISE_TIMEOUT_S + REST_TIMEOUT_S
SAY_ENGINE_GOODBYE = (
    'We must end the call now. Say: "I am sorry, I have to end our call now. '
    'Please call back in a few minutes. Goodbye."'
)


class CallActor(Conduct, Sessions, Readers):
    """One live call (see the module docstring); its parts are in conduct.py,
    sessions.py and readers.py, its state in state.py."""

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
                await self._do(
                    self._core.ask(
                        Request(SAY_ENGINE_GOODBYE, purpose="goodbye"), trio.current_time()
                    )
                )
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
            if self._transfer_error is not None and not self._ended.failed:
                # The caller hung up after being told of the callback: still a failed
                # transfer on the record, whoever ended the call.
                self._ended = CallEnded("transfer_failed", failed=True, error=self._transfer_error)
            with trio.move_on_after(FINALISE_TIMEOUT_S + REST_TIMEOUT_S) as scope:
                scope.shield = True
                if self._model is not None:
                    await self._model.aclose()  # at once: an open model session costs money
                await self._functions.finish()
                if self._ended.failed and self._ended.reason.startswith("model_"):
                    await apologise(self._setup)
                await self._finalise(started_at)
            self._done.set()

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
        if not await self._store.send_within(record, FINALISE_TIMEOUT_S):
            log.error("call %s: the call's record not queued: the store's inbox stayed full",
                      setup.call_sid)  # fmt: skip
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
                tuple(sorted(core.errors_by_class.items())),
            )
        )
