"""What the call actors and the API report to the metrics aggregator: small frozen
records, sent with ``send_nowait`` into a DROP_NEWEST mailbox (a metric never slows a
call). The runtime's own events (engine/events.py) travel the same mailbox."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from engine.events import SupervisorEvent

if TYPE_CHECKING:
    from engine.histogram import Histogram


@dataclass(frozen=True, slots=True)
class CallBegan:
    project_id: str


@dataclass(frozen=True, slots=True)
class CallProgress:
    """Per-frame and per-turn timings of one call since its last report (every few
    seconds and at its end), so a long call shows in the metrics while it runs."""

    project_id: str
    to_model: Histogram  # caller frame read -> append sent to the model
    to_caller: Histogram  # model delta read -> media sent to Twilio
    turn_latency: Histogram  # caller stopped speaking -> first model audio sent
    barge_ins: int


# Named so that /metrics can export every value at 0 before the first one happens.
CallStatus = Literal["completed", "missed", "failed"]
FunctionOutcome = Literal["ok", "error", "timeout", "cancelled"]


@dataclass(frozen=True, slots=True)
class CallFinished:
    project_id: str | None
    status: CallStatus
    end_reason: str
    duration_s: float
    time_to_first_audio_s: float | None = None
    reconnects: int = 0
    renewals: int = 0
    # The model's error events and failed responses during the call, by class
    # (actors/call/errors.py: fatal, session_gone, race, recoverable; failed_response).
    model_errors: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class FunctionCalled:
    project_id: str
    outcome: FunctionOutcome
    latency_s: float


@dataclass(frozen=True, slots=True)
class ModelConnected:
    """One attempt to open a model session (early, first, reconnect or renewal)."""

    ok: bool
    latency_s: float
    error: str | None = None


MetricsSample = (
    SupervisorEvent | CallBegan | CallProgress | CallFinished | FunctionCalled | ModelConnected
)
