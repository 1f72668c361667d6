"""The metrics aggregator's rolling error rates and its samples (under a mock clock)."""

from __future__ import annotations

from typing import Literal

import trio
import trio.testing

from actors.metrics import ErrorRateRule, MetricsAggregator
from engine.alert_level import AlertLevel
from engine.histogram import FAST_BUCKETS_S, SLOW_BUCKETS_S, Histogram
from engine.lifecycle import StopSignal
from engine.mailbox import Mailbox, OverflowPolicy
from engine.messages import Alert
from engine.metric_samples import CallFinished, CallProgress, FunctionCalled, MetricsSample

RULE = ErrorRateRule(threshold=0.5, window_s=60.0)
CallStatus = Literal["completed", "missed", "failed"]


def aggregator() -> tuple[MetricsAggregator, Mailbox[MetricsSample], Mailbox[Alert]]:
    inbox: Mailbox[MetricsSample] = Mailbox("metrics", 256, OverflowPolicy.DROP_NEWEST)
    alerts: Mailbox[Alert] = Mailbox("alerts", 16, OverflowPolicy.DROP_NEWEST)
    return MetricsAggregator(inbox, alerts=alerts, error_rate=RULE), inbox, alerts


async def test_a_burst_of_failed_function_calls_raises_high_error_rate_once_per_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics, _, alerts = aggregator()
    for _ in range(3):
        metrics.fold(FunctionCalled("acme", "ok", 0.1))
    for _ in range(3):  # 3 of 6 failed: at the threshold
        metrics.fold(FunctionCalled("acme", "timeout", 5.0))
    first = alerts.drain_nowait()
    for _ in range(10):  # the burst goes on within the same window: no second alert
        metrics.fold(FunctionCalled("acme", "error", 0.2))
    within_window = alerts.drain_nowait()
    await trio.sleep(61)
    for _ in range(5):  # a new window, still failing: one more alert
        metrics.fold(FunctionCalled("acme", "error", 0.2))
    next_window = alerts.drain_nowait()
    assert [(a.type, a.level) for a in first] == [("highErrorRate", AlertLevel.ERROR)]
    assert first[0].message.startswith("3 of the last 6 function calls failed (50%")
    assert first[0].message.endswith("; failed in acme (3 of 6)")
    assert first[0].project_id == "acme"  # one project behind every failure: its alert
    assert within_window == []
    assert len(next_window) == 1
    stats = metrics.statistics()
    assert stats.high_error_rate_alerts_total == {"function_calls": 2}
    assert stats.function_calls_total[("acme", "error")] == 15
    assert stats.function_call_seconds.count == 21


async def test_failed_calls_raise_a_critical_alert_but_turned_away_calls_do_not_count(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics, _, alerts = aggregator()
    for _ in range(10):  # missed calls (unknown number, capacity) are not engine errors
        metrics.fold(CallFinished("acme", "missed", "engine_at_capacity", 0.0))
    assert alerts.drain_nowait() == []
    for n in range(6):
        if n % 2:
            reason = "model_unreachable"
            metrics.fold(CallFinished("acme", "failed", reason, 30.0, time_to_first_audio_s=0.4))
        else:
            metrics.fold(CallFinished("acme", "completed", "x", 30.0, time_to_first_audio_s=0.4))
    (alert,) = alerts.drain_nowait()
    assert (alert.type, alert.level) == ("highErrorRate", AlertLevel.CRITICAL)
    stats = metrics.statistics()
    assert stats.calls_total == {("acme", "missed"): 10, ("acme", "completed"): 3,
                                 ("acme", "failed"): 3}  # fmt: skip
    assert stats.time_to_first_audio.count == 6
    assert stats.error_rates["calls"] == 0.5
    assert stats.model_errors_total == 3


async def test_high_error_rate_names_the_projects_whose_calls_failed_worst_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One engine-wide rate (a shared cause is one alert), and the alert says whose calls
    failed: a rate that spans businesses must not leave the operator to find them."""
    metrics, _, alerts = aggregator()
    outcomes = [("quiet", False)] * 5 + [("acme", False)]  # (project, failed)
    # The sixth failure puts the window at the threshold (6 of 12).
    outcomes += [("smith", True)] * 3 + [("acme", True), ("zed", True), ("yarrow", True)]
    for project, failed in outcomes:
        status: CallStatus = "failed" if failed else "completed"
        metrics.fold(CallFinished(project, status, "model_unreachable", 3.0))
    (alert,) = alerts.drain_nowait()
    # smith's 3 failures first; then one each: the higher share first (yarrow and zed,
    # 1 of 1, before acme, 1 of 2), names breaking the tie.
    assert alert.message == (
        "6 of the last 12 calls failed (50%; threshold 50% over 60 s); failed in "
        "smith (3 of 3), yarrow (1 of 1), zed (1 of 1), acme (1 of 2)"
    )
    assert alert.project_id is None  # several projects: the engine's alert
    assert alert.metadata["projects"] == {
        "smith": {"failed": 3, "total": 3},
        "yarrow": {"failed": 1, "total": 1},
        "zed": {"failed": 1, "total": 1},
        "acme": {"failed": 1, "total": 2},
    }
    assert "quiet" not in alert.message  # no failure of its own: not named


async def test_high_error_rate_names_five_projects_and_counts_the_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics, _, alerts = aggregator()
    for _ in range(8):
        metrics.fold(FunctionCalled("steady", "ok", 0.1))
    for n in range(8):  # the eighth failure reaches the threshold (8 of 16)
        metrics.fold(FunctionCalled(f"p{n}", "error", 0.1))
    (alert,) = alerts.drain_nowait()
    assert alert.message.endswith(
        "failed in p0 (1 of 1), p1 (1 of 1), p2 (1 of 1), p3 (1 of 1), p4 (1 of 1) "
        "and 3 more projects"
    )
    assert len(alert.metadata["projects"]) == 8


async def test_call_progress_merges_timings_and_the_lag_probe_runs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics, inbox, _ = aggregator()
    forwarding = Histogram(FAST_BUCKETS_S)
    for value_s in (0.0002, 0.0003, 0.004):
        forwarding.observe(value_s)
    inbox.send_nowait(
        CallProgress("acme", forwarding, Histogram(FAST_BUCKETS_S), Histogram(SLOW_BUCKETS_S), 2)
    )
    stop = StopSignal()
    async with trio.open_nursery() as nursery:
        await nursery.start(metrics.run, stop)
        await trio.sleep(2.0)
        stop.request()
    stats = metrics.statistics()
    assert stats.forwarding_to_model.count == 3
    assert stats.forwarding_to_model.cumulative()[0] == ("0.0005", 2)
    assert stats.barge_ins_total == 2
    assert stats.loop_lag.count >= 3  # a probe every 0.5 s


async def test_model_error_events_are_counted_by_class_and_exported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics, _, _ = aggregator()
    errors = (("failed_response", 2), ("recoverable", 3))
    metrics.fold(CallFinished("acme", "completed", "caller_hung_up", 60.0, model_errors=errors))
    metrics.fold(CallFinished("acme", "completed", "caller_hung_up", 60.0,
                              model_errors=(("recoverable", 1), ("race", 4))))  # fmt: skip
    stats = metrics.statistics()
    assert stats.model_error_events_total == {"failed_response": 2, "recoverable": 4, "race": 4}
    assert stats.model_errors_total == 0  # none of these calls was ended by the model
