"""Messages between actors: frozen records, no behaviour.

Events are past tense, commands imperative (style.md 7.2). Anything more than one actor
needs lives here, in the lowest layer, so actors never import each other.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.config import AlertLevel


def new_event_id() -> str:
    return str(uuid.uuid4())


def utc_now() -> datetime:
    """Wall-clock time, for records written to the database only. Timing and timeouts
    use ``trio.current_time()`` so that tests control them."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Alert:
    """Something an operator may need to know. ``type`` names the kind of problem in the
    product's vocabulary (``actorCrashed``, ``openaiError``, ``databaseError``...)."""

    level: AlertLevel
    type: str
    title: str
    message: str
    project_id: str | None = None
    call_sid: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    timestamp: datetime = field(default_factory=utc_now)
    event_id: str = field(default_factory=new_event_id)


@dataclass(frozen=True, slots=True)
class EventLogWritten:
    """A row for the ``event_log`` table, sent to the store. ``event_id`` makes the
    write idempotent: a retried batch never duplicates a row."""

    event_id: str
    timestamp: datetime
    level: str
    type: str
    message: str
    project_id: str | None
    call_sid: str | None
    metadata: dict[str, Any]

    @classmethod
    def from_alert(cls, alert: Alert) -> EventLogWritten:
        return cls(
            event_id=alert.event_id,
            timestamp=alert.timestamp,
            level=alert.level.name.lower(),
            type=alert.type,
            message=f"{alert.title}: {alert.message}",
            project_id=alert.project_id,
            call_sid=alert.call_sid,
            metadata=alert.metadata,
        )


StoreWrite = EventLogWritten
