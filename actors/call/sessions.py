"""The call's model sessions (actor part): the first one (the early session opened at
webhook time, if this instance has it), a reconnect after a drop, and the renewal before
the session's cap at a quiet moment, each with the conversation restored."""

from __future__ import annotations

import logging
from functools import partial

import trio

from actors.call.responses import Request
from actors.call.session import (
    FIRST_BACKOFF_S,
    RECONNECT_BACKOFF_S,
    RECONNECT_BUDGET_S,
    ModelUnavailable,
    configure,
    new_session,
)
from actors.call.setup import CallEnded
from actors.call.state import CallState
from engine.alert_level import AlertLevel
from engine.early_requests import take_early
from engine.ws import WebSocket, WebSocketClosed

log = logging.getLogger("afterhours.call")

RENEW_MARGIN_S = 60.0
RENEW_MARGIN_FRACTION = 0.1  # for short caps: renew in the last tenth
PROGRESS_EVERY_S = 5.0  # how often a live call reports its timings to the metrics


class Sessions(CallState):
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
        await self._do(
            self._core.ask(Request(instructions, purpose="greeting"), trio.current_time())
        )

    async def _new_session(self, budget_s: float, backoff_s: tuple[float, ...]) -> WebSocket:
        return await new_session(
            self._setup,
            budget_s,
            backoff_s,
            event_id=partial(self._core.ids.new, "s"),
            report=self._report,
        )

    async def _replace_session(self, why: str, current: WebSocket) -> bool:
        """A new session with the conversation so far restored from the transcript, in
        place of ``current`` (dropped, expired, or about to reach its cap). False when
        another task replaced it first; ``ModelUnavailable`` when every attempt failed."""
        async with self._replacing:
            if current is not self._model:
                return False
            self._core.replacing()  # requests wait: the old socket may be gone
            model = await self._new_session(RECONNECT_BUDGET_S, RECONNECT_BACKOFF_S)
            try:
                for send in self._core.restored():  # the history first, before any request
                    await model.send_text(send.data)
            except (WebSocketClosed, trio.TooSlowError, trio.BrokenResourceError):
                await model.aclose()
                raise ModelUnavailable(f"the new session closed while restoring ({why})") from None
            self._model = model  # the old one is closed by its reader (_pump_model)
            self._session_started_s, self._session_expires_s = trio.current_time(), None
            if self._receiving is not None:
                self._receiving.cancel()  # the old session's reader stops waiting on it
            log.info("call %s: model session replaced (%s)", self._setup.call_sid, why)
            await self._do(self._core.resumed(trio.current_time()))
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
            await self._do(self._core.check(now_s))  # a response.create nothing answered
            if now_s >= next_report_s:
                self._report(self._progress())
                next_report_s = now_s + PROGRESS_EVERY_S
            if now_s < renew_at_s:
                # Re-read every second: session.created may bring an earlier expiry.
                await trio.sleep_until(min(renew_at_s, now_s + 1.0, next_report_s))
                continue
            await self._wait_quiet(cap_at_s)
            assert self._model is not None
            try:
                renewed = await self._replace_session("session renewal", self._model)
            except ModelUnavailable as exc:
                self._openai_alert(AlertLevel.ERROR, "Model unreachable", str(exc))
                raise CallEnded("model_unreachable", failed=True) from None
            self._renewals += renewed

    async def _wait_quiet(self, until_s: float) -> None:
        """Until the call is quiet (nobody speaking, nothing playing, no response or tool
        under way) or ``until_s``: woken by the step that makes it quiet (``_changed``),
        and when a ``response.create`` nothing answered falls due (``check`` fails it)."""
        try:
            while not self._core.quiet and trio.current_time() < until_s:
                self._quiet = trio.Event()
                with trio.move_on_at(min(until_s, self._core.responses.overdue_at_s)):
                    await self._quiet.wait()
                self._quiet = None
                await self._do(self._core.check(trio.current_time()))
        finally:
            self._quiet = None

    def _renewal_times(self) -> tuple[float, float]:
        cap_at_s = self._session_started_s + self._setup.session_max_s
        if self._session_expires_s is not None:
            cap_at_s = min(cap_at_s, self._session_expires_s)
        lifetime_s = cap_at_s - self._session_started_s
        margin_s = min(RENEW_MARGIN_S, RENEW_MARGIN_FRACTION * lifetime_s)
        return cap_at_s - margin_s, cap_at_s
