"""How the call conducts itself (actor part): doing what the core says, running the
tools of a response (with a "one moment" when a business function is slow), the built-in
tools, the hang-up once the last words are heard, the transfer, and the limits timer."""

from __future__ import annotations

import logging
from functools import partial

import trio

from actors.call.core import (
    Action,
    ClearCaller,
    End,
    Expiry,
    Note,
    Replace,
    RunTools,
    ScheduleRetry,
    Send,
)
from actors.call.limits import (
    SAY_DURATION_GOODBYE,
    SAY_SILENCE_GOODBYE,
    SAY_STILL_THERE,
    SAY_WRAP_UP,
)
from actors.call.responses import Request
from actors.call.setup import CallEnded
from actors.call.state import CallState
from actors.call.tools import BUILTIN_NAMES, ToolCall, run_builtin
from actors.call.twilio_side import NO_TWILIO_ACCOUNT, transfer_call
from engine.alert_level import AlertLevel
from engine.messages import Alert
from engine.twilio_codec import encode_clear

log = logging.getLogger("afterhours.call")

GOODBYE_GRACE_S = 10.0
FILLER_AFTER_S = 1.0
FILLER_INSTRUCTIONS = (
    'Tell the caller in a few words that you are checking. Say: "One moment, let me check."'
)
SAY_CALL_BACK = (
    "The transfer did not go through. Say: \"I'm sorry, I could not connect you. "
    'The on-call technician will call you back as soon as possible. Goodbye."'
)


class Conduct(CallState):
    async def _do(self, actions: list[Action]) -> None:
        # Every core step that returns actions passes here: the one that made it quiet too.
        self._changed()
        for action in actions:
            if isinstance(action, Send):
                await self._to_model([action.data])
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
                raise CallEnded(action.reason, action.failed, action.error)
            elif isinstance(action, Replace):
                assert self._model is not None
                await self._reconnect(action.why, self._model)
                return  # what followed was for the old session

    async def _retry(self, action: ScheduleRetry) -> None:
        await trio.sleep(action.retry.after_s)
        await self._do(self._core.retry_due(action.retry, trio.current_time()))

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
            await self._do(self._core.tools_done(answer=False, now_s=trio.current_time()))
            await self._maybe_hang_up()
            return
        await self._do(self._core.tools_done(now_s=trio.current_time()))

    async def _run_function_with_filler(self, call: ToolCall) -> str:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._filler_if_slow)
            output = await self._functions.run(call)
            nursery.cancel_scope.cancel()
        return output

    async def _filler_if_slow(self) -> None:
        await trio.sleep(FILLER_AFTER_S)
        with trio.CancelScope(shield=True):  # never half-send a frame
            await self._do(
                self._core.ask(Request(FILLER_INSTRUCTIONS, purpose="filler"), trio.current_time())
            )

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
        no_account = result.hang_up is None and setup.project.on_call_number is not None
        if call.name == "transfer_to_on_call" and no_account:
            self._transfer_failed(NO_TWILIO_ACCOUNT)
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
        if error is not None:
            self._transfer_failed(error)
        self._transfer_settled.set()  # a stream end seen meanwhile waits for this
        if error is None:
            raise CallEnded("transferred")  # Twilio now ends our stream itself
        # The caller hears they will be called back; the call then ends as after any
        # goodbye, or after GOODBYE_GRACE_S if that never finishes playing.
        self._hang_up_reason = "transfer_failed"
        await self._do(
            self._core.ask(Request(SAY_CALL_BACK, purpose="goodbye"), trio.current_time())
        )
        await trio.sleep(GOODBYE_GRACE_S)
        raise CallEnded("transfer_failed", failed=True, error=error)

    async def _watch_limits(self) -> None:
        """Silence and duration limits (actors/call/limits.py); a goodbye that never
        finishes playing still ends the call after ``GOODBYE_GRACE_S``."""
        limits = self._limits
        assert limits is not None
        while True:
            await trio.sleep_until(limits.next_check_s())
            action = limits.due(trio.current_time())
            if action == "prompt_silence":
                await self._do(
                    self._core.ask(Request(SAY_STILL_THERE, purpose="prompt"), trio.current_time())
                )
            elif action == "warn_duration":
                await self._do(
                    self._core.ask(Request(SAY_WRAP_UP, purpose="prompt"), trio.current_time())
                )
            elif action in ("end_silence", "end_duration"):
                reason = "silence_timeout" if action == "end_silence" else "max_duration"
                self._hang_up_reason = reason
                goodbye = SAY_SILENCE_GOODBYE if action == "end_silence" else SAY_DURATION_GOODBYE
                await self._do(
                    self._core.ask(Request(goodbye, purpose="goodbye"), trio.current_time())
                )
                await trio.sleep(GOODBYE_GRACE_S)
                raise CallEnded(reason)
