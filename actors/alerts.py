"""The alert actor: decides who hears about a problem, once.

Every alert becomes an ``event_log`` row (through the store) and a console log line at
its level; critical alerts are always printed. ``ALERT_MIN_LEVEL`` filters the outside
channels (webhook and email, added by the monitoring issue). The inbox drops the newest
alert when full and counts it as suppressed: an alert flood is itself the symptom, and
the actor must never slow the code that raises alerts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from engine.config import AlertLevel
from engine.events import ChildExited, ExitReason, SupervisorEscalated, SupervisorEvent
from engine.messages import Alert, EventLogWritten, StoreWrite

if TYPE_CHECKING:
    from engine.lifecycle import StopSignal
    from engine.mailbox import Mailbox, Outbox

log = logging.getLogger("afterhours.alerts")

# How long the alert actor waits for room in the store's inbox before it counts the row
# as lost; the store's inbox blocks by policy, and the alert actor must keep moving.
STORE_SEND_TIMEOUT_S = 2.0

_LOG_LEVELS = {
    AlertLevel.INFO: logging.INFO,
    AlertLevel.WARNING: logging.WARNING,
    AlertLevel.ERROR: logging.ERROR,
    AlertLevel.CRITICAL: logging.CRITICAL,
}


@dataclass(frozen=True, slots=True)
class AlertStatistics:
    alerts_total: int
    by_level: dict[str, int]
    forwarded_total: int  # at or above ALERT_MIN_LEVEL: for the outside channels
    event_log_lost_total: int


_CRASHES = (ExitReason.FAILED, ExitReason.START_FAILED)


def alert_for(event: SupervisorEvent) -> Alert | None:
    """The alert a runtime event deserves, if any (a pure function)."""
    if isinstance(event, SupervisorEscalated):
        return Alert(
            level=AlertLevel.CRITICAL,
            type="supervisorEscalated",
            title="Engine supervisor gave up",
            message=event.error,
            metadata={"supervisor": event.supervisor, "child": event.child_id},
        )
    # A restart that fails before it started is as much a crash as a failure later on.
    if isinstance(event, ChildExited) and event.reason in _CRASHES:
        return Alert(
            level=AlertLevel.ERROR,
            type="actorCrashed",
            title=f"{event.supervisor}/{event.child_id} crashed",
            message=event.error or "crashed",
            metadata={"supervisor": event.supervisor, "child": event.child_id},
        )
    return None


class AlertActor:
    def __init__(
        self, inbox: Mailbox[Alert], store: Outbox[StoreWrite], *, min_level: AlertLevel
    ) -> None:
        self._inbox = inbox
        self._store = store
        self._min_level = min_level
        self._by_level = dict.fromkeys((level.name.lower() for level in AlertLevel), 0)
        self._forwarded_total = 0
        self._event_log_lost_total = 0

    async def run(self, stop: StopSignal, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        while (alert := await self._inbox.receive_until(stop)) is not None:
            await self._handle(alert)
        for alert in self._inbox.drain_nowait():
            await self._handle(alert)

    def statistics(self) -> AlertStatistics:
        return AlertStatistics(
            alerts_total=sum(self._by_level.values()),
            by_level=dict(self._by_level),
            forwarded_total=self._forwarded_total,
            event_log_lost_total=self._event_log_lost_total,
        )

    async def _handle(self, alert: Alert) -> None:
        self._by_level[alert.level.name.lower()] += 1
        log.log(_LOG_LEVELS[alert.level], "[%s] %s: %s", alert.type, alert.title, alert.message)
        if alert.level >= self._min_level:
            self._forwarded_total += 1
        with trio.move_on_after(STORE_SEND_TIMEOUT_S):
            await self._store.send(EventLogWritten.from_alert(alert))
            return
        self._event_log_lost_total += 1
        log.error("event_log row for alert %s lost: the store's inbox stayed full", alert.type)
