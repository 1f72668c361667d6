"""The project's business functions as a call runs them (I/O): each call recorded
whatever happens, including one still running when the call ends."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import httpx
import msgspec
import trio

from actors.functions import call_function
from engine.alert_level import AlertLevel
from engine.mailbox import RECORD_SEND_TIMEOUT_S
from engine.messages import Alert, FunctionCallRecorded, new_event_id, utc_now
from engine.metric_samples import FunctionCalled
from engine.tls import client_context

if TYPE_CHECKING:
    from actors.call.setup import CallSetup
    from actors.call.tools import ToolCall
    from engine.mailbox import Outbox
    from engine.messages import StoreWrite

log = logging.getLogger("afterhours.call")


@dataclass(frozen=True, slots=True)
class _Running:
    call: ToolCall
    arguments: dict[str, Any]
    started_s: float


class BusinessFunctions:
    """One call's HTTP client for its project's functions and the calls in flight."""

    def __init__(self, setup: CallSetup, store: Outbox[StoreWrite], alerts: Outbox[Alert]) -> None:
        self._setup = setup
        self._store = store
        self._alerts = alerts
        self._http: httpx.AsyncClient | None = setup.http
        self._own_http = False  # made here (no shared client): closed here
        self._running: dict[str, _Running] = {}

    async def run(self, call: ToolCall) -> str:
        """The function's output for the model; the call is recorded either way."""
        if self._http is None:  # made on first use: most calls never need one
            self._http = httpx.AsyncClient(verify=client_context())
            self._own_http = True
        decoded, arguments = _arguments(call)
        self._running[call.call_id] = _Running(call, arguments, trio.current_time())
        setup = self._setup
        result = await call_function(self._http, setup.project, call.name, decoded, setup.call_sid)
        del self._running[call.call_id]
        # Shielded: a hang-up now must not lose the record of a call that has finished.
        with trio.CancelScope(shield=True):
            await self._record(
                call.name, result.outcome, result.latency_ms, arguments, result.http_status,
                result.error,
            )  # fmt: skip
        return result.output

    async def finish(self) -> None:
        """The call is over: each function still running is recorded as cancelled, with
        how long it had run, and alerted (the caller never got its answer)."""
        now_s = trio.current_time()
        for running in self._running.values():
            latency_ms = int((now_s - running.started_s) * 1000)
            error = f"the call ended after {latency_ms} ms, before the function answered"
            await self._record(running.call.name, "cancelled", latency_ms, running.arguments,
                               None, error)  # fmt: skip
        self._running.clear()
        if self._own_http and self._http is not None:
            await self._http.aclose()

    async def _record(
        self,
        name: str,
        outcome: Literal["ok", "error", "timeout", "cancelled"],
        latency_ms: int,
        arguments: dict[str, Any],
        http_status: int | None,
        error: str | None,
    ) -> None:
        setup = self._setup
        record = FunctionCallRecorded(
            new_event_id(), setup.call_sid, name, outcome, latency_ms, utc_now(),
            project_id=setup.project.id, arguments=arguments, http_status=http_status,
            error=error,
        )  # fmt: skip
        if not await self._store.send_within(record, RECORD_SEND_TIMEOUT_S):
            log.error("call %s: function call record not queued (%s)", setup.call_sid, name)
        if setup.metrics is not None:
            setup.metrics.send_nowait(FunctionCalled(setup.project.id, outcome, latency_ms / 1000))
        if outcome != "ok":
            # Cancelled is a warning: the function may have done its work (a booking)
            # though the caller never heard the answer; an operator should look.
            level = AlertLevel.WARNING if outcome == "cancelled" else AlertLevel.ERROR
            self._alerts.send_nowait(
                Alert(
                    level,
                    "functionCallFailure",
                    "Function call failed",
                    f"Function {name} failed: {error}",
                    project_id=setup.project.id,
                    call_sid=setup.call_sid,
                    metadata={"functionName": name, "error": error, "outcome": outcome},
                )
            )


def _arguments(call: ToolCall) -> tuple[Any, dict[str, Any]]:
    """The arguments for the function (decoded if JSON, else the text) and for the
    record (an object: the text under ``raw`` when it is not one)."""
    try:
        decoded = msgspec.json.decode(call.arguments)
    except msgspec.DecodeError:
        return call.arguments, {"raw": call.arguments}
    return decoded, decoded if isinstance(decoded, dict) else {"raw": call.arguments}
