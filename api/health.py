"""``GET /health``: quick, for load balancers; no database round trip.

The shape is the product description's: ``status``, ``timestamp``, ``uptime`` (whole
seconds) and ``activeSessions`` (calls in progress).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec
import trio

if TYPE_CHECKING:
    from collections.abc import Callable


class HealthBody(msgspec.Struct):
    status: str
    timestamp: str
    uptime: int
    activeSessions: int


class HealthView:
    """Reads only synchronous ``statistics()`` snapshots: no message round trip, so the
    probe answers even when every actor is busy."""

    def __init__(self, active_sessions: Callable[[], int]) -> None:
        self._active_sessions = active_sessions
        self._started_at_s = trio.current_time()

    def body(self) -> HealthBody:
        now = datetime.now(UTC)
        return HealthBody(
            status="ok",
            timestamp=now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            uptime=int(trio.current_time() - self._started_at_s),
            activeSessions=self._active_sessions(),
        )
