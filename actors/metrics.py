"""The metrics aggregator: folds what the engine reports into counters, histograms and
rolling error rates.

Its inbox drops the newest sample when full (and counts it): a metric must never slow
the actor that reports it. It folds runtime events (starts, exits, restarts,
escalations) and the calls' samples (engine/metric_samples.py): calls by project and
outcome, function calls with latency, model connections, reconnects and renewals,
barge-ins, time to first audio, turn latency and per-frame forwarding latency. It also
measures its own event-loop lag (how late a timer fires: the whole process's
responsiveness). Over a rolling window it watches the share of failed calls and of failed
function calls, across every project; past ``threshold`` it raises ``highErrorRate`` once
per window, naming the projects whose calls failed in it (worst first). The rate is the
engine's, not each project's: a cause every business shares (the model, the database, the
network) is one alert, not one per business, and the names say whether it is one business
or all of them (docs/operations.md, "highErrorRate: one rate, the projects named").
``statistics()`` is a synchronous snapshot for ``/metrics``, ``/stats`` and health.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import trio

from engine.alert_level import AlertLevel
from engine.events import ChildExited, ChildRestarted, ChildStarted, SupervisorEscalated
from engine.histogram import FAST_BUCKETS_S, SLOW_BUCKETS_S, Histogram, HistogramSnapshot
from engine.messages import Alert
from engine.metric_samples import (
    CallBegan,
    CallFinished,
    CallProgress,
    FunctionCalled,
    MetricsSample,
    ModelConnected,
)

if TYPE_CHECKING:
    from engine.lifecycle import StopSignal
    from engine.mailbox import Mailbox, Outbox

LAG_PROBE_S = 0.5
ERROR_RATE_MIN_SAMPLES = 5  # a rate over fewer outcomes says nothing
# Projects named in a highErrorRate message (the rest counted), and in its metadata: an
# alert is read on a phone, and an engine may serve hundreds of businesses.
NAMED_PROJECTS = 5
PROJECTS_IN_METADATA = 20
NO_PROJECT = ""  # a call that ended before its project was known (an unknown number)
ErrorKind = Literal["calls", "function_calls"]
K = TypeVar("K")


@dataclass(frozen=True, slots=True)
class ErrorRateRule:
    threshold: float = 0.25  # share of failures that raises highErrorRate
    window_s: float = 300.0


@dataclass(frozen=True, slots=True)
class ModelConnection:
    ok: bool
    at_s: float  # Trio clock
    latency_s: float
    error: str | None


@dataclass
class _Tally:
    """The aggregator's own counters, folded into in place; ``statistics()`` copies them
    into a frozen ``MetricsStatistics`` (same fields). Every dict is keyed by a bounded
    label set (projects, statuses, outcomes, child ids, error classes), never by a call."""

    samples_total: int = 0
    child_starts_total: dict[str, int] = field(default_factory=dict)
    child_exits_total: dict[str, int] = field(default_factory=dict)  # "supervisor/reason"
    restarts_total: dict[str, int] = field(default_factory=dict)  # by child id
    escalations_total: int = 0
    calls_started_total: dict[str, int] = field(default_factory=dict)  # by project
    calls_total: dict[tuple[str, str], int] = field(default_factory=dict)  # (project, status)
    function_calls_total: dict[tuple[str, str], int] = field(default_factory=dict)
    function_call_seconds: Histogram = field(default_factory=lambda: Histogram(SLOW_BUCKETS_S))
    model_connections_total: dict[str, int] = field(default_factory=dict)  # ok / failed
    model_last_connection: ModelConnection | None = None
    model_reconnects_total: int = 0
    model_errors_total: int = 0  # calls ended by the model (unreachable, error, lost)
    model_renewals_total: int = 0
    model_error_events_total: dict[str, int] = field(default_factory=dict)  # by class
    barge_ins_total: int = 0
    time_to_first_audio: Histogram = field(default_factory=lambda: Histogram(SLOW_BUCKETS_S))
    turn_latency: Histogram = field(default_factory=lambda: Histogram(SLOW_BUCKETS_S))
    forwarding_to_model: Histogram = field(default_factory=lambda: Histogram(FAST_BUCKETS_S))
    forwarding_to_caller: Histogram = field(default_factory=lambda: Histogram(FAST_BUCKETS_S))
    loop_lag: Histogram = field(default_factory=lambda: Histogram(FAST_BUCKETS_S))
    loop_lag_last_s: float = 0.0
    high_error_rate_alerts_total: dict[str, int] = field(default_factory=dict)
    error_rates: dict[str, float] = field(default_factory=dict)  # current window's share

    def snapshot(self) -> MetricsStatistics:
        copied = {f.name: _copied(getattr(self, f.name)) for f in fields(self)}
        return MetricsStatistics(**copied)


@dataclass(frozen=True, slots=True)
class MetricsStatistics:
    """``_Tally``'s fields as they were: dicts copied, histograms frozen."""

    samples_total: int
    child_starts_total: dict[str, int]
    child_exits_total: dict[str, int]
    restarts_total: dict[str, int]
    escalations_total: int
    calls_started_total: dict[str, int]
    calls_total: dict[tuple[str, str], int]
    function_calls_total: dict[tuple[str, str], int]
    function_call_seconds: HistogramSnapshot
    model_connections_total: dict[str, int]
    model_last_connection: ModelConnection | None
    model_reconnects_total: int
    model_errors_total: int
    model_renewals_total: int
    model_error_events_total: dict[str, int]
    barge_ins_total: int
    time_to_first_audio: HistogramSnapshot
    turn_latency: HistogramSnapshot
    forwarding_to_model: HistogramSnapshot
    forwarding_to_caller: HistogramSnapshot
    loop_lag: HistogramSnapshot
    loop_lag_last_s: float
    high_error_rate_alerts_total: dict[str, int]
    error_rates: dict[str, float]


def _copied(value: Any) -> Any:
    if isinstance(value, Histogram):
        return value.snapshot()
    if isinstance(value, dict):
        return dict(value)  # keys and values are immutable: a shallow copy is a copy
    return value  # numbers, and the frozen ModelConnection


class MetricsAggregator:
    def __init__(
        self,
        inbox: Mailbox[MetricsSample],
        *,
        alerts: Outbox[Alert] | None = None,
        error_rate: ErrorRateRule = ErrorRateRule(),
    ) -> None:
        self._inbox = inbox
        self._alerts = alerts
        self._rule = error_rate
        self._stats = _Tally()
        # (at_s, failed, project_id) per outcome in the window.
        self._outcomes: dict[ErrorKind, deque[tuple[float, bool, str]]] = {
            "calls": deque(),
            "function_calls": deque(),
        }
        self._quiet_until_s: dict[ErrorKind, float] = {"calls": 0.0, "function_calls": 0.0}

    async def run(self, stop: StopSignal, *, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._probe_lag)
            task_status.started()
            while (sample := await self._inbox.receive_until(stop)) is not None:
                self.fold(sample)
            nursery.cancel_scope.cancel()
        for sample in self._inbox.drain_nowait():
            self.fold(sample)

    def statistics(self) -> MetricsStatistics:
        return self._stats.snapshot()

    def fold(self, sample: MetricsSample) -> None:
        """Pure bookkeeping, synchronous: no await between receiving and counting."""
        stats = self._stats
        stats.samples_total += 1
        match sample:
            case ChildStarted(supervisor=supervisor):
                _add(stats.child_starts_total, supervisor)
            case ChildExited(supervisor=supervisor, reason=reason):
                _add(stats.child_exits_total, f"{supervisor}/{reason.value}")
            case ChildRestarted(child_id=child_id):
                _add(stats.restarts_total, child_id)
            case SupervisorEscalated():
                stats.escalations_total += 1
            case CallBegan(project_id=project_id):
                _add(stats.calls_started_total, project_id)
            case CallProgress():
                stats.forwarding_to_model.merge(sample.to_model)
                stats.forwarding_to_caller.merge(sample.to_caller)
                stats.turn_latency.merge(sample.turn_latency)
                stats.barge_ins_total += sample.barge_ins
            case CallFinished():
                _add(stats.calls_total, (sample.project_id or "", sample.status))
                if sample.time_to_first_audio_s is not None:
                    stats.time_to_first_audio.observe(sample.time_to_first_audio_s)
                stats.model_reconnects_total += sample.reconnects
                if sample.end_reason.startswith("model_"):
                    stats.model_errors_total += 1
                stats.model_renewals_total += sample.renewals
                for error_class, count in sample.model_errors:
                    _add(stats.model_error_events_total, error_class, count)
                if sample.status != "missed":  # a turned-away call is not an engine error
                    failed = sample.status == "failed"
                    self._outcome("calls", sample.project_id or NO_PROJECT, failed=failed)
            case FunctionCalled():
                _add(stats.function_calls_total, (sample.project_id, sample.outcome))
                stats.function_call_seconds.observe(sample.latency_s)
                failed = sample.outcome in ("error", "timeout")
                self._outcome("function_calls", sample.project_id, failed=failed)
            case ModelConnected():
                _add(stats.model_connections_total, "ok" if sample.ok else "failed")
                stats.model_last_connection = ModelConnection(
                    sample.ok, trio.current_time(), sample.latency_s, sample.error
                )

    def _outcome(self, kind: ErrorKind, project_id: str, *, failed: bool) -> None:
        now_s = trio.current_time()
        window = self._outcomes[kind]
        window.append((now_s, failed, project_id))
        while window and window[0][0] < now_s - self._rule.window_s:
            window.popleft()
        failures = sum(1 for _, bad, _ in window if bad)
        share = failures / len(window)
        self._stats.error_rates[kind] = round(share, 4)
        if (
            len(window) >= ERROR_RATE_MIN_SAMPLES
            and share >= self._rule.threshold
            and now_s >= self._quiet_until_s[kind]
        ):
            self._quiet_until_s[kind] = now_s + self._rule.window_s  # once per window
            _add(self._stats.high_error_rate_alerts_total, kind)
            what = "calls" if kind == "calls" else "function calls"
            by_project = _failures_by_project(window)
            if self._alerts is not None:
                self._alerts.send_nowait(
                    Alert(
                        AlertLevel.CRITICAL if kind == "calls" else AlertLevel.ERROR,
                        "highErrorRate",
                        f"High error rate in {what}",
                        f"{failures} of the last {len(window)} {what} failed "
                        f"({share:.0%}; threshold {self._rule.threshold:.0%} over "
                        f"{self._rule.window_s:g} s); {_named(by_project)}",
                        # One project behind every failure: the alert is that project's
                        # (event_log's project_id, the dashboard's and the webhook's).
                        project_id=_only_project(by_project),
                        metadata={
                            "kind": kind,
                            "failed": failures,
                            "total": len(window),
                            "projects": {
                                project or "(no project)": {"failed": bad, "total": total}
                                for project, bad, total in by_project[:PROJECTS_IN_METADATA]
                            },
                        },
                    )
                )

    async def _probe_lag(self) -> None:
        """How late a timer fires: every task in this process waits that much longer."""
        while True:
            asked_at_s = trio.current_time()
            await trio.sleep(LAG_PROBE_S)
            lag_s = max(0.0, trio.current_time() - asked_at_s - LAG_PROBE_S)
            self._stats.loop_lag.observe(lag_s)
            self._stats.loop_lag_last_s = lag_s


def _failures_by_project(window: deque[tuple[float, bool, str]]) -> list[tuple[str, int, int]]:
    """(project, failed, total) for each project with a failure in ``window``: most
    failures first, then the higher share, then by name (a stable order for one state)."""
    failed: dict[str, int] = {}
    total: dict[str, int] = {}
    for _, bad, project in window:
        _add(total, project)
        if bad:
            _add(failed, project)
    rows = [(project, n, total[project]) for project, n in failed.items()]
    return sorted(rows, key=lambda row: (-row[1], -row[1] / row[2], row[0]))


def _named(by_project: list[tuple[str, int, int]]) -> str:
    """``failed in smith-plumbing (4 of 5), acme (1 of 3) and 2 more projects``."""
    named = [
        f"{project or '(no project)'} ({bad} of {total})"
        for project, bad, total in by_project[:NAMED_PROJECTS]
    ]
    rest = len(by_project) - NAMED_PROJECTS
    more = f" and {rest} more project{'s' if rest > 1 else ''}" if rest > 0 else ""
    return f"failed in {', '.join(named)}{more}"


def _only_project(by_project: list[tuple[str, int, int]]) -> str | None:
    if len(by_project) == 1 and by_project[0][0] != NO_PROJECT:
        return by_project[0][0]
    return None


def _add(counts: dict[K, int], key: K, n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n


__all__ = ["ErrorRateRule", "MetricsAggregator", "MetricsSample", "MetricsStatistics"]
