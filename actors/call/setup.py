"""What a call actor is given, and how a call ends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.pricing import DEFAULT_PRICES, Prices

if TYPE_CHECKING:
    import httpx

    from actors.model_link import ModelEndpoint
    from actors.twilio_rest import TwilioRest
    from engine.early_requests import EarlyRequest
    from engine.mailbox import Outbox
    from engine.metric_samples import MetricsSample
    from engine.projects import Project


@dataclass(frozen=True, slots=True)
class CallSetup:
    call_sid: str
    stream_sid: str
    project: Project
    model: ModelEndpoint
    twilio_rest: TwilioRest | None = None  # None: no Twilio account configured
    early: Outbox[EarlyRequest] | None = None  # sessions opened at webhook time
    session_max_s: float = 3600.0  # the model's session cap (MODEL_SESSION_MAX_S)
    prices: Prices = DEFAULT_PRICES
    metrics: Outbox[MetricsSample] | None = None  # DROP_NEWEST: a metric never waits
    engine_instance: str | None = None  # this process's lease id (actors/store/leases.py)
    frames_per_append: int = 1  # CALLER_FRAMES_PER_APPEND
    mark_every_deltas: int = 1  # MARK_EVERY_DELTAS
    # The process's HTTP client (actors/http_client.py); None: one of its own per use.
    http: httpx.AsyncClient | None = None


class CallEnded(Exception):
    """Why the call ended; ``error`` is the detail the record keeps for a failure."""

    def __init__(self, reason: str, failed: bool = False, error: str | None = None) -> None:
        self.reason = reason
        self.failed = failed
        self.error = error if error is not None else (reason if failed else None)
        super().__init__(reason)
