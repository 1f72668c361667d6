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

from engine.errors import ChildStartError
from engine.events import ChildExited, ExitReason, describe_error
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


@dataclass(frozen=True, slots=True)
class ChildRun:
    """How one run of a child ended, for its supervisor to judge."""

    child_id: str
    reason: ExitReason
    error: Exception | None
    started: bool  # it called task_status.started() before it ended
    uptime_s: float

    def exited(self, supervisor: str, *, in_first_start: bool = False) -> ChildExited:
        return ChildExited(
            supervisor=supervisor,
            child_id=self.child_id,
            reason=self.reason,
            error=None if self.error is None else describe_error(self.error),
            uptime_s=self.uptime_s,
            in_first_start=in_first_start,
        )

    def start_error(self, supervisor: str) -> ChildStartError:
        """What the starter receives when the child ended before it reported started."""
        cause = self.error if self.error is not None else RuntimeError("returned before started")
        error = ChildStartError(supervisor, self.child_id, cause)
        error.__cause__ = self.error
        return error


async def run_once(
    child: RunningChild,
    fn: ChildFn,
    task_status: trio.TaskStatus[Any],
    *,
    on_started: Callable[[], None],
    on_exit: Callable[[], object],
) -> ChildRun:
    """Run ``fn`` once as ``child``: the per-child boundary both the static supervisor and
    the dynamic group put around each child. ``on_exit`` runs (synchronously) before
    ``child.done`` is set, so whoever waits on ``done`` sees the child's bookkeeping gone.
    An ``Exception`` is caught and returned, for the caller to judge; cancellation and
    other ``BaseException`` pass through."""
    status = StatusProxy(task_status, on_started)
    error: Exception | None = None
    try:
        with child.scope:
            await fn(child.stop, task_status=status)
    except Exception as exc:  # noqa: BLE001 - the one sanctioned broad catch: it judges
        error = exc
    finally:
        on_exit()
        child.done.set()
    return ChildRun(
        child.child_id,
        child.exit_reason(error, status.started_called),
        error,
        status.started_called,
        trio.current_time() - child.started_at_s,
    )


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
