"""The alert actor and the metrics aggregator, fed the runtime's own events."""

from __future__ import annotations

import logging

import pytest
import trio

from actors.alerts import AlertActor, alert_for
from actors.metrics import MetricsAggregator, MetricsSample
from engine.alert_level import AlertLevel
from engine.events import (
    ChildExited,
    ChildRestarted,
    ChildStarted,
    ExitReason,
    SupervisorEscalated,
)
from engine.lifecycle import StopSignal
from engine.mailbox import Mailbox, OverflowPolicy
from engine.messages import Alert, EventLogWritten, StoreWrite


def exited(reason: ExitReason, error: str | None = None) -> ChildExited:
    return ChildExited("afterhours", "store", reason, error, uptime_s=1.0)


CRASH = exited(ExitReason.FAILED, "OSError: boom")
ESCALATION = SupervisorEscalated("afterhours", "store", "gave up")


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        pytest.param(CRASH, ("actorCrashed", AlertLevel.CRITICAL), id="crash"),
        pytest.param(ESCALATION, ("supervisorEscalated", AlertLevel.CRITICAL), id="escalation"),
        pytest.param(exited(ExitReason.STOPPED), None, id="clean-stop"),
        pytest.param(
            exited(ExitReason.START_FAILED, "x"),
            ("actorCrashed", AlertLevel.CRITICAL),
            id="no-start",
        ),
        pytest.param(
            ChildExited(
                "afterhours", "media", ExitReason.START_FAILED, "x", 0.0, in_first_start=True
            ),
            None,
            id="engine-start-failed",
        ),
        pytest.param(
            ChildExited("calls", "CA1", ExitReason.FAILED, "KeyError: x", uptime_s=3.0),
            ("sessionFailure", AlertLevel.ERROR),
            id="call-crash",
        ),
        pytest.param(ChildRestarted("afterhours", "store", 1), None, id="restart"),
    ],
)
def test_alert_for_runtime_events(
    event: ChildExited | SupervisorEscalated | ChildRestarted,
    expected: tuple[str, AlertLevel] | None,
) -> None:
    alert = alert_for(event)
    assert (None if alert is None else (alert.type, alert.level)) == expected


async def test_alert_actor_logs_every_alert_and_sends_event_log_rows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inbox: Mailbox[Alert] = Mailbox("alerts", 8, OverflowPolicy.DROP_NEWEST)
    store: Mailbox[StoreWrite] = Mailbox("store", 8, OverflowPolicy.BLOCK)
    actor = AlertActor(inbox, store, min_level=AlertLevel.ERROR)
    inbox.send_nowait(Alert(AlertLevel.WARNING, "twilioError", "Slow webhook", "2.5 s"))
    inbox.send_nowait(Alert(AlertLevel.CRITICAL, "openaiError", "Model down", "503", "acme"))
    stop = StopSignal()
    with caplog.at_level(logging.INFO, logger="afterhours.alerts"):
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run, stop)
            stop.request()
    rows = [r for r in store.drain_nowait() if isinstance(r, EventLogWritten)]
    assert [(r.level, r.type, r.project_id, r.message) for r in rows] == [
        ("warning", "twilioError", None, "Slow webhook: 2.5 s"),
        ("critical", "openaiError", "acme", "Model down: 503"),
    ]
    stats = actor.statistics()
    assert stats.by_level == {"info": 0, "warning": 1, "error": 0, "critical": 1}
    assert stats.forwarded_total == 1  # only the critical one passes ALERT_MIN_LEVEL=error
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.CRITICAL]


async def test_alert_actor_counts_rows_it_could_not_hand_to_the_store(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inbox: Mailbox[Alert] = Mailbox("alerts", 8, OverflowPolicy.DROP_NEWEST)
    store: Mailbox[StoreWrite] = Mailbox("store", 1, OverflowPolicy.BLOCK)
    actor = AlertActor(inbox, store, min_level=AlertLevel.ERROR)
    for n, kind in enumerate(("databaseError", "openaiError", "twilioError")):  # none folded
        inbox.send_nowait(Alert(AlertLevel.ERROR, kind, "Down", str(n)))
    stop = StopSignal()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run, stop)
        await trio.sleep(60)  # nobody drains the store: two rows must time out
        stop.request()
    assert actor.statistics().event_log_lost_total == 2
    written = store.drain_nowait()
    assert [r.message for r in written if isinstance(r, EventLogWritten)] == ["Down: 0"]


async def test_metrics_fold_counts_runtime_events() -> None:
    inbox: Mailbox[MetricsSample] = Mailbox("metrics", 16, OverflowPolicy.DROP_NEWEST)
    metrics = MetricsAggregator(inbox)
    for sample in (
        ChildStarted("afterhours", "store", 0),
        exited(ExitReason.FAILED, "x"),
        ChildRestarted("afterhours", "store", 1),
        ChildStarted("afterhours", "store", 1),
        SupervisorEscalated("afterhours", "store", "gave up"),
    ):
        inbox.send_nowait(sample)
    stop = StopSignal()
    async with trio.open_nursery() as nursery:
        await nursery.start(metrics.run, stop)
        stop.request()
    stats = metrics.statistics()
    assert stats.samples_total == 5
    assert stats.child_starts_total == {"afterhours": 2}
    assert stats.child_exits_total == {"afterhours/failed": 1}
    assert stats.restarts_total == {"store": 1}
    assert stats.escalations_total == 1
