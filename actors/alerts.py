"""The alert actor: decides who hears about a problem, once.

Every alert becomes an ``event_log`` row (through the store) and a console log line at
its level (critical ones always show). ``ALERT_MIN_LEVEL`` filters the outside channels,
a webhook and email (actors/alert_channels.py), each behind its own bounded queue.
Identical alerts (same type, project, title and level) within a minute are folded into
one with a count. The inbox drops the newest alert when full and counts it: an alert
flood is itself the symptom, and the actor must never slow the code that raises alerts.

An alert's text may carry what a stranger sent (a URL path, a CallSid): the actor
escapes control characters in every text field and bounds each (``printable_alert``) as
it takes the alert, so the log line, the webhook, the email and the ``event_log`` row
all get the same one-line, bounded text.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec
import trio

from actors.alert_channels import Outgoing
from engine.alert_level import AlertLevel
from engine.events import ChildExited, ExitReason, SupervisorEscalated, SupervisorEvent
from engine.mailbox import RECORD_SEND_TIMEOUT_S
from engine.messages import Alert, EventLogWritten, StoreWrite
from engine.safe_text import printable, printable_value

if TYPE_CHECKING:
    from collections.abc import Sequence

    from actors.alert_channels import Channel
    from engine.lifecycle import StopSignal
    from engine.mailbox import Mailbox, Outbox

log = logging.getLogger("afterhours.alerts")

FOLD_WINDOW_S = 60.0
CHANNEL_DRAIN_S = 2.0  # at shutdown, for the webhook and email queues

# Bounds on an alert's text: a title is a line; a message a few sentences (an error's
# text included); the rest are names and ids.
MAX_TITLE_CHARS = 200
MAX_MESSAGE_CHARS = 2000
MAX_FIELD_CHARS = 200  # type, project, CallSid, each metadata key and string

_LOG_LEVELS = {
    AlertLevel.INFO: logging.INFO,
    AlertLevel.WARNING: logging.WARNING,
    AlertLevel.ERROR: logging.ERROR,
    AlertLevel.CRITICAL: logging.CRITICAL,
}


@dataclass(frozen=True, slots=True)
class AlertStatistics:
    alerts_total: int  # emitted (a folded group counts once)
    by_level: dict[str, int]
    forwarded_total: int  # at or above ALERT_MIN_LEVEL: for the outside channels
    folded_total: int  # held back into a folded alert
    event_log_lost_total: int
    channels: dict[str, dict[str, int]]


_CRASHES = (ExitReason.FAILED, ExitReason.START_FAILED)
CALLS_GROUP = "calls"  # the dynamic group's name (api/root/engine.py)


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
    # A child that fails the engine's own start (a port in use) is not: the start fails,
    # the CLI says why in one line and exits 1; an alert would page someone about an
    # engine that never ran, with a second, different account of the same failure.
    if isinstance(event, ChildExited) and event.reason in _CRASHES and not event.in_first_start:
        metadata = {"supervisor": event.supervisor, "child": event.child_id}
        if event.supervisor == CALLS_GROUP:  # one call's actor: that call failed
            return Alert(
                level=AlertLevel.ERROR,
                type="sessionFailure",
                title="A call's actor crashed",
                message=event.error or "crashed",
                call_sid=event.child_id,
                metadata=metadata,
            )
        # A service actor (store, metrics, alerts, API...): restarted within the
        # supervisor's intensity, but an operator must know.
        return Alert(
            level=AlertLevel.CRITICAL,
            type="actorCrashed",
            title=f"{event.supervisor}/{event.child_id} crashed",
            message=event.error or "crashed",
            metadata=metadata,
        )
    return None


def printable_alert(alert: Alert) -> Alert:
    """``alert`` with control characters escaped and every text bounded (a pure
    function; an alert with clean, short text comes back equal)."""

    def field(text: str | None) -> str | None:
        return None if text is None else printable(text, MAX_FIELD_CHARS)

    return dataclasses.replace(
        alert,
        type=printable(alert.type, MAX_FIELD_CHARS),
        title=printable(alert.title, MAX_TITLE_CHARS),
        message=printable(alert.message, MAX_MESSAGE_CHARS),
        project_id=field(alert.project_id),
        call_sid=field(alert.call_sid),
        metadata=printable_value(alert.metadata, MAX_FIELD_CHARS),
    )


@dataclass
class _Fold:
    until_s: float  # the fold window's end
    last: Alert
    count: int = 0  # identical alerts held back in this window


class AlertActor:
    """Every alert: a console line at its level and an ``event_log`` row; at or above
    ``ALERT_MIN_LEVEL`` also the outside channels (actors/alert_channels.py). Identical
    alerts (same type, project, title and level) within ``fold_window_s`` are folded: the
    first goes out at once, the rest become one alert with their count when the window
    ends."""

    def __init__(
        self,
        inbox: Mailbox[Alert],
        store: Outbox[StoreWrite],
        *,
        min_level: AlertLevel,
        channels: Sequence[Channel] = (),
        fold_window_s: float = FOLD_WINDOW_S,
    ) -> None:
        self._inbox = inbox
        self._store = store
        self._min_level = min_level
        self._channels = tuple(channels)
        self._fold_window_s = fold_window_s
        self._folds: dict[tuple[str, str | None, str, AlertLevel], _Fold] = {}
        self._by_level = dict.fromkeys((level.name.lower() for level in AlertLevel), 0)
        self._forwarded_total = 0
        self._folded_total = 0
        self._event_log_lost_total = 0

    @property
    def channels(self) -> tuple[Channel, ...]:
        return self._channels

    async def run(self, stop: StopSignal, *, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            for channel in self._channels:
                nursery.start_soon(channel.run)
            nursery.start_soon(self._unfold_every_second)
            task_status.started()
            while (alert := await self._inbox.receive_until(stop)) is not None:
                await self._handle(alert)
            nursery.cancel_scope.cancel()
        # Stopping: what is queued still goes out, within the budget.
        for alert in self._inbox.drain_nowait():
            await self._handle(alert)
        await self._unfold(everything=True)
        with trio.move_on_after(CHANNEL_DRAIN_S):
            async with trio.open_nursery() as draining:
                for channel in self._channels:
                    draining.start_soon(channel.drain, CHANNEL_DRAIN_S)

    def statistics(self) -> AlertStatistics:
        return AlertStatistics(
            alerts_total=sum(self._by_level.values()),
            by_level=dict(self._by_level),
            forwarded_total=self._forwarded_total,
            folded_total=self._folded_total,
            event_log_lost_total=self._event_log_lost_total,
            channels={
                stats.name: {
                    "delivered_total": stats.delivered_total,
                    "failed_total": stats.failed_total,
                    "queued": stats.queued,
                    "dropped_total": stats.dropped_total,
                }
                for stats in (channel.statistics() for channel in self._channels)
            },
        )

    async def _handle(self, alert: Alert) -> None:
        alert = printable_alert(alert)  # before anything reads it: every channel gets this
        key = (alert.type, alert.project_id, alert.title, alert.level)
        fold = self._folds.get(key)
        now_s = trio.current_time()
        if fold is not None and now_s < fold.until_s:
            fold.count += 1
            fold.last = alert
            self._folded_total += 1
            return
        if fold is not None and fold.count:
            await self._emit(_folded(fold, self._fold_window_s))
        self._folds[key] = _Fold(now_s + self._fold_window_s, alert)
        await self._emit(Outgoing(alert))

    async def _unfold_every_second(self) -> None:
        while True:
            await trio.sleep(1.0)
            await self._unfold()

    async def _unfold(self, *, everything: bool = False) -> None:
        """Windows that ended: one alert for what each held back."""
        now_s = trio.current_time()
        for key, fold in tuple(self._folds.items()):
            if everything or now_s >= fold.until_s:
                del self._folds[key]
                if fold.count:
                    await self._emit(_folded(fold, self._fold_window_s))

    async def _emit(self, outgoing: Outgoing) -> None:
        alert = outgoing.alert
        self._by_level[alert.level.name.lower()] += 1
        times = f" (x{outgoing.count})" if outgoing.count > 1 else ""
        log.log(
            _LOG_LEVELS[alert.level],
            "[%s] %s: %s%s",
            alert.type,
            alert.title,
            alert.message,
            times,
            extra={"call_sid": alert.call_sid, "project_id": alert.project_id},
        )
        if alert.level >= self._min_level:
            self._forwarded_total += 1
            for channel in self._channels:
                channel.offer(outgoing)
        row = EventLogWritten.from_alert(alert)
        if outgoing.count > 1:
            row = msgspec.structs.replace(row, metadata=row.metadata | {"count": outgoing.count})
        if await self._store.send_within(row, RECORD_SEND_TIMEOUT_S):
            return
        self._event_log_lost_total += 1
        log.error("event_log row for alert %s lost: the store's inbox stayed full", alert.type)


def _folded(fold: _Fold, window_s: float) -> Outgoing:
    last = fold.last
    message = f"{last.message} ({fold.count} more like this within {window_s:g} s)"
    return Outgoing(dataclasses.replace(last, message=message), fold.count)
