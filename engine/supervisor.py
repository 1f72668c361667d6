"""A static supervisor with Erlang/OTP semantics, expressed in Trio.

* Children start in list order with ``nursery.start``: a child that fails before it calls
  ``task_status.started()`` fails the supervisor's own start (OTP's synchronous
  ``start_link``), after the children already started are stopped again.
* Strategy ``one_for_one``: a child that exits is restarted alone, by its restart type:
  ``PERMANENT`` always, ``TRANSIENT`` only after a failure, ``TEMPORARY`` never.
* Restart intensity: more than ``max_restarts`` restarts within ``period_s`` and the
  supervisor stops its children and raises ``RestartIntensityExceeded`` to its parent.
* Shutdown: children are stopped one by one in reverse start order, each within its own
  budget (ask, wait ``shutdown_s``, then cancel).
* Every start, exit, restart and escalation is reported as an event.

``Supervisor.run`` has the child signature itself, so supervisors nest.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from engine.children import ChildFn, RunningChild, run_once, stop_within_budget
from engine.errors import ChildStartError, RestartIntensityExceeded
from engine.events import (
    ChildRestarted,
    ChildStarted,
    ExitReason,
    Report,
    SupervisorEscalated,
    describe_error,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.lifecycle import StopSignal

log = logging.getLogger("afterhours.supervisor")


class RestartType(enum.Enum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


@dataclass(frozen=True, slots=True)
class ChildSpec:
    id: str
    run: ChildFn
    restart: RestartType = RestartType.PERMANENT
    shutdown_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("child spec needs a non-empty id")
        if not self.shutdown_s > 0:
            raise ValueError(f"child {self.id!r}: shutdown_s must be > 0, not {self.shutdown_s!r}")


@dataclass(frozen=True, slots=True)
class RestartIntensity:
    """OTP's MaxR/MaxT. Choose the tolerated burst first, then a period that makes the
    sustained rate acceptable; intensities multiply across nested supervisors."""

    max_restarts: int = 3
    period_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0 or not self.period_s > 0:
            raise ValueError(f"invalid restart intensity {self.max_restarts} in {self.period_s} s")


class RestartWindow:
    """The restarts of the last ``period_s`` (trio clock), counted against one intensity.

    The one count of restarts: this supervisor, the embedded PostgreSQL's
    (engine/postgres_supervisor.py) and the parent of ``serve --workers``
    (api/workers.py) each keep a window and give up when ``admit`` says no."""

    def __init__(self, intensity: RestartIntensity) -> None:
        self.intensity = intensity
        self._times_s: deque[float] = deque()

    def admit(self) -> bool:
        """Count a restart now; False (not counted) when it would be one more than
        ``max_restarts`` within ``period_s``: the caller escalates."""
        now_s = trio.current_time()
        while self._times_s and self._times_s[0] <= now_s - self.intensity.period_s:
            self._times_s.popleft()
        if len(self._times_s) >= self.intensity.max_restarts:
            return False
        self._times_s.append(now_s)
        return True

    @property
    def recent(self) -> int:
        """The restarts admitted within the last ``period_s``, as of the last ``admit``."""
        return len(self._times_s)


@dataclass(frozen=True, slots=True)
class ChildStatistics:
    id: str
    restart: str
    running: bool
    restart_count: int


@dataclass(frozen=True, slots=True)
class SupervisorStatistics:
    name: str
    children: tuple[ChildStatistics, ...]
    restarts_total: int
    stopping: bool


class Supervisor:
    def __init__(
        self,
        name: str,
        specs: list[ChildSpec],
        *,
        intensity: RestartIntensity,
        report: Report,
        on_stopping: Callable[[], None] | None = None,
    ) -> None:
        """``on_stopping`` is called once, synchronously, when the supervisor begins to
        stop its children for any reason (a stop request, a failed start, an escalation):
        the root arms its shutdown watchdog there."""
        ids = [spec.id for spec in specs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"supervisor {name!r}: duplicate child ids in {ids}")
        self.name = name
        self._specs = tuple(specs)
        self._report = report
        self._on_stopping = on_stopping
        self._running: dict[str, RunningChild] = {}
        self._restart_counts = dict.fromkeys(ids, 0)
        self._restarts = RestartWindow(intensity)
        self._stopping = False
        self._wake = trio.Event()  # set on escalation, to stop without a stop request
        self._escalation: RestartIntensityExceeded | None = None

    async def run(self, stop: StopSignal, *, task_status: trio.TaskStatus[None]) -> None:
        """Start every child, supervise them until ``stop``, then stop them in reverse.

        A stop requested while children are starting aborts the start: the child being
        started is cancelled (until it reports started it runs in our scope), the ones
        already running are stopped in order, and ``run`` returns without reporting
        started. Being cancelled from outside is a brutal kill: every child is cancelled
        at once, without its shutdown budget.
        """
        start_error: ChildStartError | None = None
        all_started = False
        async with trio.open_nursery() as nursery:
            try:
                with stop.interruptible():
                    for spec in self._specs:
                        await nursery.start(self._supervise, spec)
                    all_started = True
            except ChildStartError as exc:
                start_error = exc
            except BaseException:
                await self._stop_children()  # cancelled while starting: still unwind in order
                raise
            if all_started:
                task_status.started()
                with stop.interruptible():
                    await self._wake.wait()
            await self._stop_children()
        # Raised outside the nursery so the parent sees the error itself, not a group.
        if start_error is not None:
            raise start_error
        if self._escalation is not None:
            raise self._escalation

    def statistics(self) -> SupervisorStatistics:
        children = tuple(
            ChildStatistics(
                id=spec.id,
                restart=spec.restart.value,
                running=spec.id in self._running,
                restart_count=self._restart_counts[spec.id],
            )
            for spec in self._specs
        )
        return SupervisorStatistics(
            name=self.name,
            children=children,
            restarts_total=sum(self._restart_counts.values()),
            stopping=self._stopping,
        )

    async def _stop_children(self) -> None:
        if not self._stopping and self._on_stopping is not None:
            self._on_stopping()
        self._stopping = True
        for spec in reversed(self._specs):
            child = self._running.get(spec.id)
            if child is not None:
                await stop_within_budget(child)

    async def _supervise(self, spec: ChildSpec, *, task_status: trio.TaskStatus[None]) -> None:
        """Run ``spec`` until it is not to be restarted. The first run carries the real
        ``task_status``; restarts report started to nobody."""
        status_target: trio.TaskStatus[Any] = task_status
        while True:
            child = RunningChild(spec.id, spec.shutdown_s, trio.current_time())
            self._running[spec.id] = child
            run = await run_once(
                child,
                spec.run,
                status_target,
                on_started=self._started_reporter(spec.id),
                on_exit=lambda: self._running.pop(spec.id),
            )
            error, reason = run.error, run.reason
            first_start = status_target is task_status
            # A failure of the first start is the starter's to report (it receives the
            # error); any other failure, a restart that cannot start included, is judged
            # here, once, with its traceback.
            if error is not None and not (first_start and not run.started):
                log.error(
                    "%s/%s exited: %s", self.name, spec.id, describe_error(error), exc_info=error
                )
            self._report(run.exited(self.name, in_first_start=first_start and not run.started))
            if first_start and not run.started:
                raise run.start_error(self.name)
            if not self._should_restart(spec, reason, child):
                return
            if not self._note_restart(spec, error):
                return
            status_target = trio.TASK_STATUS_IGNORED

    def _started_reporter(self, child_id: str) -> Callable[[], None]:
        def report_started() -> None:
            self._report(ChildStarted(self.name, child_id, self._restart_counts[child_id]))

        return report_started

    def _should_restart(self, spec: ChildSpec, reason: ExitReason, child: RunningChild) -> bool:
        if self._stopping or child.stop.requested:
            return False
        if spec.restart is RestartType.TEMPORARY:
            return False
        if spec.restart is RestartType.TRANSIENT:
            return reason is not ExitReason.NORMAL
        return True

    def _note_restart(self, spec: ChildSpec, error: Exception | None) -> bool:
        """Count a restart against the intensity window; escalate when it is exceeded."""
        if not self._restarts.admit():
            escalation = RestartIntensityExceeded(
                self.name,
                spec.id,
                self._restarts.intensity.max_restarts,
                self._restarts.intensity.period_s,
                reason_text(error),
            )
            escalation.__cause__ = error
            self._escalation = escalation
            self._report(SupervisorEscalated(self.name, spec.id, str(escalation)))
            log.critical("%s", escalation)
            self._wake.set()
            return False
        self._restart_counts[spec.id] += 1
        self._report(ChildRestarted(self.name, spec.id, self._restart_counts[spec.id]))
        return True


def reason_text(error: Exception | None) -> str:
    return "none: it exited normally" if error is None else describe_error(error)
