"""What the static supervisor and the dynamic group share: how one child runs and stops.

A running child is three things: a ``StopSignal`` (the polite request), a ``CancelScope``
(the kill after the shutdown budget) and a ``done`` event (so the stopper can wait with a
deadline). ``stop_within_budget`` is OTP's ``shutdown => Timeout``: ask, wait, then kill.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import trio

from engine.events import ExitReason
from engine.lifecycle import StopSignal

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

# After a kill, how long to wait for the child's own (shielded, bounded) cleanup before
# the stopper moves on to the next child and logs this one as stuck. A child that shields
# without a deadline is a bug that Trio cannot cancel: the supervisor's nursery still waits
# for it, and only the process-level watchdog (api/root/watchdog.py) ends that wait.
KILL_GRACE_S = 2.0

log = logging.getLogger("afterhours.supervisor")


class ChildFn(Protocol):
    """Every supervised child: ``async def run(stop, *, task_status)``.

    It calls ``task_status.started(value)`` once its resources are ready, returns when
    ``stop`` is requested (after its own graceful cleanup), and raises on failure.
    """

    def __call__(
        self, stop: StopSignal, /, *, task_status: trio.TaskStatus[Any]
    ) -> Awaitable[None]: ...


class StatusProxy:
    """Wraps a ``task_status`` so the wrapper knows whether the child reported started:
    a failure before that point fails the starter; after it, the supervisor judges it."""

    def __init__(self, inner: trio.TaskStatus[Any], on_started: Callable[[], None]) -> None:
        self._inner = inner
        self._on_started = on_started
        self.started_called = False

    def started(self, value: Any = None) -> None:
        self.started_called = True
        self._on_started()
        self._inner.started(value)


@dataclass(eq=False)
class RunningChild:
    child_id: str
    shutdown_s: float
    started_at_s: float
    stop: StopSignal = field(default_factory=StopSignal)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)
    killed: bool = False

    def exit_reason(self, error: BaseException | None, started: bool) -> ExitReason:
        if error is not None:
            return ExitReason.FAILED if started else ExitReason.START_FAILED
        if self.killed:
            return ExitReason.KILLED
        if self.stop.requested:
            return ExitReason.STOPPED
        return ExitReason.NORMAL


async def stop_within_budget(child: RunningChild) -> None:
    """Ask ``child`` to stop, wait up to its shutdown budget, then cancel it.

    Shielded so that a second cancellation (a double Ctrl-C, an outer deadline) cannot
    interrupt the reaping of children; every wait inside is bounded.
    """
    with trio.CancelScope(shield=True):
        child.stop.request()
        with trio.move_on_after(child.shutdown_s):
            await child.done.wait()
        if child.done.is_set():
            return
        child.killed = True
        child.scope.cancel()
        with trio.move_on_after(KILL_GRACE_S):
            await child.done.wait()
        if not child.done.is_set():
            log.error(
                "child %s did not exit %.1f s after it was cancelled", child.child_id, KILL_GRACE_S
            )
