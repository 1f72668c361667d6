"""A dynamic group of temporary children: OTP's ``simple_one_for_one``, for calls.

Every child is an instance of the same kind of work (a call), started on demand with
``start_child`` and never restarted: a dropped media stream cannot be resumed, so a failed
call is reported and counted, and its siblings never notice. The group refuses new
children beyond ``max_children`` (admission control) and once it is stopping.

Stopping the group stops all children in parallel (OTP stops ``simple_one_for_one``
children asynchronously): each is asked to stop and given ``shutdown_s`` (a call's stop
budget, ``STOP_BUDGET_S``; the drain, ``DRAIN_TIMEOUT_S``, has run before) before it is
cancelled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from engine.children import ChildFn, ChildRun, RunningChild, run_once, stop_within_budget
from engine.errors import EngineError
from engine.events import ChildStarted, ExitReason, Report, describe_error

if TYPE_CHECKING:
    from engine.lifecycle import StopSignal

log = logging.getLogger("afterhours.group")


class GroupRefused(EngineError):
    """The group will not start this child (full, stopping, or a duplicate id)."""

    def __init__(self, group: str, child_id: str, reason: str) -> None:
        self.reason = reason
        super().__init__(f"group {group!r} refused {child_id!r}: {reason}")


@dataclass(frozen=True, slots=True)
class GroupStatistics:
    name: str
    active: int
    max_children: int
    started_total: int
    completed_total: int
    failed_total: int
    killed_total: int
    refused_total: int
    accepting: bool
    last_exit_at_s: float | None = None  # trio.current_time() when a child last ended


class DynamicGroup:
    def __init__(self, name: str, *, max_children: int, shutdown_s: float, report: Report) -> None:
        if max_children < 1 or not shutdown_s > 0:
            raise ValueError(f"group {name!r}: max_children >= 1 and shutdown_s > 0 required")
        self.name = name
        self._max_children = max_children
        self._shutdown_s = shutdown_s
        self._report = report
        self._nursery: trio.Nursery | None = None
        self._children: dict[str, RunningChild] = {}
        self._last_exit_at_s: float | None = None
        self._counts = dict.fromkeys(("started", "completed", "failed", "killed", "refused"), 0)
        self._emptied = trio.lowlevel.ParkingLot()  # wait_empty's waiters

    async def run(self, stop: StopSignal, *, task_status: trio.TaskStatus[None]) -> None:
        """The group's own life: open the nursery, accept children until ``stop``, then
        stop them all in parallel within the budget."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await stop.wait()
            finally:
                self._nursery = None  # refuse new children from here on
                with trio.CancelScope(shield=True):
                    await self._stop_all()

    async def start_child(self, child_id: str, fn: ChildFn) -> Any:
        """Start ``fn(stop, task_status=...)`` as a temporary child and return the
        value it passes to ``started``. Raises ``GroupRefused`` or ``ChildStartError``; a
        failure after start is reported as an event and never reaches the caller."""
        nursery = self._nursery
        reason = self._refusal(child_id, nursery is None)
        if reason is not None:
            self._counts["refused"] += 1
            raise GroupRefused(self.name, child_id, reason)
        assert nursery is not None
        child = RunningChild(child_id, self._shutdown_s, trio.current_time())
        # Reserved before the first checkpoint, so concurrent starts count it; no await lies
        # between the check and start(), so the nursery cannot close in between, and the
        # child's own ``finally`` releases the reservation on every path after that.
        self._children[child_id] = child
        return await nursery.start(self._run_child, child, fn)

    async def wait_empty(self) -> None:
        """Return once no child is running: at once if none is, else the moment the last
        one ends (woken by its exit, not by a poll). Children started meanwhile are waited
        for too. No timeout of its own: the caller bounds it (the drain has its budget)."""
        if not self._children:
            await trio.lowlevel.checkpoint()
            return
        while self._children:
            await self._emptied.park()

    def statistics(self) -> GroupStatistics:
        return GroupStatistics(
            name=self.name,
            active=len(self._children),
            max_children=self._max_children,
            started_total=self._counts["started"],
            completed_total=self._counts["completed"],
            failed_total=self._counts["failed"],
            killed_total=self._counts["killed"],
            refused_total=self._counts["refused"],
            accepting=self._nursery is not None,
            last_exit_at_s=self._last_exit_at_s,
        )

    def _refusal(self, child_id: str, stopping: bool) -> str | None:
        if stopping:
            return "the group is stopping or not running"
        if child_id in self._children:
            return "a child with this id is already running"
        if len(self._children) >= self._max_children:
            return f"at capacity ({self._max_children} children)"
        return None

    async def _run_child(
        self,
        child: RunningChild,
        fn: ChildFn,
        *,
        task_status: trio.TaskStatus[Any],
    ) -> None:
        run = await run_once(
            child,
            fn,
            task_status,
            on_started=lambda: self._note_started(child.child_id),
            on_exit=lambda: self._forget(child.child_id),
        )
        self._note_exit(run)
        if not run.started:
            raise run.start_error(self.name)

    def _forget(self, child_id: str) -> None:
        del self._children[child_id]
        if not self._children:
            # The waiters run at a later checkpoint, after _note_exit (no await in
            # between): they read this exit's last_exit_at_s.
            self._emptied.unpark_all()

    def _note_started(self, child_id: str) -> None:
        self._counts["started"] += 1
        self._report(ChildStarted(self.name, child_id, 0))

    def _note_exit(self, run: ChildRun) -> None:
        self._last_exit_at_s = trio.current_time()
        reason, error = run.reason, run.error
        if reason in (ExitReason.FAILED, ExitReason.START_FAILED):
            self._counts["failed"] += 1
            detail = reason.value if error is None else describe_error(error)
            crashed = error if reason is ExitReason.FAILED else None  # traceback for real crashes
            log.error("%s/%s failed: %s", self.name, run.child_id, detail, exc_info=crashed)
        elif reason is ExitReason.KILLED:
            self._counts["killed"] += 1
        else:
            self._counts["completed"] += 1
        self._report(run.exited(self.name))

    async def _stop_all(self) -> None:
        async with trio.open_nursery() as nursery:
            for child in tuple(self._children.values()):
                nursery.start_soon(stop_within_budget, child)
