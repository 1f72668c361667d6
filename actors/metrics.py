"""The metrics aggregator: folds the engine's events into counters.

Its inbox drops the newest sample when full (and counts it): a metric must never slow
the actor that reports it. The monitoring issue adds per-call metrics, rolling windows
and the Prometheus view; this is the part the supervision tree feeds today.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.events import (
    ChildExited,
    ChildRestarted,
    ChildStarted,
    SupervisorEscalated,
    SupervisorEvent,
)

if TYPE_CHECKING:
    import trio

    from engine.lifecycle import StopSignal
    from engine.mailbox import Mailbox

MetricsSample = SupervisorEvent


@dataclass(frozen=True, slots=True)
class MetricsStatistics:
    samples_total: int
    child_starts_total: dict[str, int]
    child_exits_total: dict[str, int]  # keyed "supervisor/reason"
    restarts_total: dict[str, int]  # keyed by child id
    escalations_total: int


class MetricsAggregator:
    def __init__(self, inbox: Mailbox[MetricsSample]) -> None:
        self._inbox = inbox
        self._samples_total = 0
        self._starts: Counter[str] = Counter()
        self._exits: Counter[str] = Counter()
        self._restarts: Counter[str] = Counter()
        self._escalations_total = 0

    async def run(self, stop: StopSignal, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        while (sample := await self._inbox.receive_until(stop)) is not None:
            self.fold(sample)
        for sample in self._inbox.drain_nowait():
            self.fold(sample)

    def fold(self, sample: MetricsSample) -> None:
        """Pure bookkeeping, synchronous: no await between receiving and counting."""
        self._samples_total += 1
        match sample:
            case ChildStarted(supervisor=supervisor):
                self._starts[supervisor] += 1
            case ChildExited(supervisor=supervisor, reason=reason):
                self._exits[f"{supervisor}/{reason.value}"] += 1
            case ChildRestarted(child_id=child_id):
                self._restarts[child_id] += 1
            case SupervisorEscalated():
                self._escalations_total += 1

    def statistics(self) -> MetricsStatistics:
        return MetricsStatistics(
            samples_total=self._samples_total,
            child_starts_total=dict(self._starts),
            child_exits_total=dict(self._exits),
            restarts_total=dict(self._restarts),
            escalations_total=self._escalations_total,
        )
