"""Messages between actors: frozen records, no behaviour.

Events are past tense, commands imperative (docs/conventions.md 1). Anything more than one actor
needs lives here, in the lowest layer, so actors never import each other.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import msgspec

if TYPE_CHECKING:
    import trio

    from engine.alert_level import AlertLevel


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


# -- records for the store ---------------------------------------------------------------
#
# msgspec Structs, tagged, because the store spools them to disk as JSON lines when
# PostgreSQL is away and must decode them back into the right type on replay.


class EventLogWritten(msgspec.Struct, frozen=True, tag="event_log", tag_field="record"):
    """A row for ``event_log``. ``event_id`` makes the write idempotent: a retried or
    replayed batch never duplicates a row."""

    event_id: str
    timestamp: datetime
    level: str
    type: str
    message: str
    project_id: str | None = None
    call_sid: str | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)

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


class CallUpdated(msgspec.Struct, frozen=True, tag="call", tag_field="record"):
    """What one source knows about a call, merged into its ``calls`` row by call_sid.

    Any field left ``None`` keeps what the row has. Updates may arrive in any order and at
    any engine instance (Twilio's status callback reaches whichever instance the balancer
    picks): the merge rules in ``actors/store/writes.py`` make the result independent of
    the order, and applying the same update twice changes nothing.
    ``source`` is ``engine`` (the call bridge, which knows how the call went),
    ``twilio`` (the status callback, which knows only that the call ended) or ``vapi``
    (Vapi's server messages about a call it answered, which know how it went).
    """

    call_sid: str
    source: Literal["engine", "twilio", "vapi"] = "engine"
    project_id: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    status: Literal["active", "completed", "missed", "failed"] | None = None
    intent: Literal["emergency", "routine", "unknown"] | None = None
    end_reason: str | None = None
    error: str | None = None
    started_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    duration_s: float | None = None
    transcript: list[dict[str, Any]] | None = None
    usage: dict[str, Any] | None = None
    cost_usd: float | None = None
    time_to_first_audio_ms: int | None = None
    stream_sid: str | None = None
    engine_instance: str | None = None
    twilio_status: str | None = None
    twilio_duration_s: int | None = None
    system: Literal["openai", "vapi"] | None = None  # which system answered
    vapi_call_id: str | None = None
    summary: str | None = None  # Vapi's end-of-call summary
    # Why Vapi did not take a call to one of its numbers, answered by the fallback instead.
    vapi_fallback: str | None = None


class FunctionCallRecorded(msgspec.Struct, frozen=True, tag="function_call", tag_field="record"):
    """One call of a business function by the model; ``id`` makes the write idempotent."""

    id: str
    call_sid: str
    name: str
    outcome: Literal["ok", "error", "timeout", "cancelled"]  # cancelled: the call ended first
    latency_ms: int
    at: datetime
    project_id: str | None = None
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)
    http_status: int | None = None
    error: str | None = None


StoreWrite = EventLogWritten | CallUpdated | FunctionCallRecorded


@dataclass(frozen=True, slots=True)
class RefreshRouting:
    """Reload the routing snapshot now (a table changed). ``reply`` gets the version
    loaded, for a writer that must read its own write (the admin API); a notification
    from PostgreSQL carries none."""

    reply: trio.MemorySendChannel[int] | None = None
