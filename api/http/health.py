"""``GET /health``: quick, for load balancers; no database round trip.

The shape is the product description's: ``status``, ``timestamp``, ``uptime`` (whole
seconds) and ``activeSessions`` (calls in progress). While the engine drains before a
stop, ``status`` is ``draining`` and the HTTP status 503, so balancers stop sending calls.
While the embedded PostgreSQL is down or being restarted, ``status`` is ``degraded`` with
HTTP 200: calls are still answered (their records wait in the spool), so a balancer must
keep sending them here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec
import trio

from engine.admission import Admission

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.postgres_supervisor import EmbeddedPostgresStatistics


class HealthBody(msgspec.Struct):
    status: str
    timestamp: str
    uptime: int
    activeSessions: int


class HealthView:
    """Reads only synchronous ``statistics()`` snapshots: no message round trip, so the
    probe answers even when every actor is busy."""

    def __init__(
        self,
        active_sessions: Callable[[], int],
        admission: Admission | None = None,
        *,
        embedded_postgres: Callable[[], EmbeddedPostgresStatistics] | None = None,
    ) -> None:
        self._active_sessions = active_sessions
        self._admission = admission or Admission()
        self._embedded_postgres = embedded_postgres
        self._started_at_s = trio.current_time()

    @property
    def http_status(self) -> int:
        return 503 if self._admission.draining else 200

    def body(self) -> HealthBody:
        now = datetime.now(UTC)
        return HealthBody(
            status=self._status(),
            timestamp=now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            uptime=int(trio.current_time() - self._started_at_s),
            activeSessions=self._active_sessions(),
        )

    def _status(self) -> str:
        if self._admission.draining:
            return "draining"
        if self._embedded_postgres is not None and not self._embedded_postgres().up:
            return "degraded"
        return "ok"
