"""What operators read about the engine itself: ``GET /health/detailed``, ``GET
/metrics`` (Prometheus) and ``GET /stats`` (the engine's own JSON view).

Everything is read from the actors' synchronous ``statistics()`` snapshots, except the
detailed health's database check, which makes one real round trip through the store's
query lane (bounded by ``DB_CHECK_TIMEOUT_S``). ``/metrics`` and ``/stats`` need the
admin token (they show per-project figures; ``/metrics`` also takes ``METRICS_TOKEN``,
which opens nothing else: api/http/app.py); ``/health/detailed`` does not, and shows
no secret: whether OpenAI and Twilio are configured, never their keys. Its error texts
(the database's, the last model connection's) name hosts, ports and the database, which
a stranger has no business learning: they are shown only to the admin token
(``details=True``); without it each service says only its status.

The embedded PostgreSQL, when the engine runs one, adds its state (``up``,
``restarting``, ``failed``), restart count and last exit to the database's entry; while
it is not up, the database is ``down`` without a round trip that could only time out.

Overall health: ``unhealthy`` (HTTP 503) when the database does not answer;
``degraded`` when records wait in the spool, the last model connection failed within
``RECENT_MODEL_FAILURE_S``, or the engine is draining; ``healthy`` otherwise.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from api.http.asgi import Response
from api.http.prometheus import Snapshot, render
from engine.json_case import camel_keys
from engine.store_queries import Ping, StoreUnavailable, ask_store

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from actors.alerts import AlertStatistics
    from actors.early_sessions import EarlyStatistics
    from actors.load import LoadReading
    from actors.metrics import MetricsStatistics
    from actors.routing import RoutingStatistics
    from actors.store.actor import StoreStatistics
    from api.http.twilio_access import ConfigWarning
    from engine.admission import Admission
    from engine.group import GroupStatistics
    from engine.mailbox import MailboxStatistics, Outbox
    from engine.postgres_supervisor import EmbeddedPostgresStatistics
    from engine.refusals import Refusals
    from engine.store_queries import StoreQuery
    from engine.supervisor import SupervisorStatistics

DB_CHECK_TIMEOUT_S = 2.0
RECENT_MODEL_FAILURE_S = 300.0


@dataclass(frozen=True)
class Sources:
    metrics: Callable[[], MetricsStatistics]
    calls: Callable[[], GroupStatistics]
    mailboxes: Callable[[], list[MailboxStatistics]]
    store: Callable[[], StoreStatistics]
    alerts: Callable[[], AlertStatistics]
    supervisor: Callable[[], SupervisorStatistics]
    early: Callable[[], EarlyStatistics]
    http_requests: Callable[[], dict[tuple[str, int], int]]
    admission: Admission
    queries: Outbox[StoreQuery]
    openai: str  # "configured" or "simulated"
    twilio: str  # "configured", "simulated" or "not_configured" (api/http/twilio_access.py)
    worker: int | None = None  # this process's WORKER_INDEX under `serve --workers`
    refusals: Refusals | None = None
    routing: Callable[[], RoutingStatistics] | None = None
    load: Callable[[], LoadReading] | None = None
    # Settings that leave something a project asks for undone (a transfer, say).
    config_warnings: Callable[[], list[ConfigWarning]] | None = None
    embedded_postgres: Callable[[], EmbeddedPostgresStatistics] | None = None
    # The routing snapshot's project ids: their counters are exported at 0 from the start.
    projects: Callable[[], Iterable[str]] | None = None
    http_routes: tuple[str, ...] = ()  # http_requests_total's route values (api/http/app.py)


class Observability:
    def __init__(self, sources: Sources) -> None:
        self._sources = sources
        self._started_at_s = trio.current_time()

    async def detailed_health(self, *, details: bool = False) -> Response:
        """The services' status; ``details`` (the admin token) adds their error texts."""
        sources = self._sources
        embedded = sources.embedded_postgres() if sources.embedded_postgres else None
        if embedded is not None and not embedded.up:
            database: dict[str, Any] = {
                "status": "down",
                "error": embedded.last_error or "the embedded PostgreSQL is restarting",
            }
        else:
            database = await self._database()
        if embedded is not None:
            database["embedded"] = _embedded(embedded, details=details)
        if not details:
            database.pop("error", None)
        store = sources.store()
        metrics = sources.metrics()
        last = metrics.model_last_connection
        openai: dict[str, Any] = {"status": sources.openai}
        model_failing = False
        if last is not None:
            ago_s = trio.current_time() - last.at_s
            openai["lastConnection"] = {
                "ok": last.ok,
                "secondsAgo": round(ago_s, 1),
                "latencyMs": round(last.latency_s * 1000),
            }
            if details:
                openai["lastConnection"]["error"] = last.error
            model_failing = not last.ok and ago_s < RECENT_MODEL_FAILURE_S
            if model_failing:
                openai["status"] = "failing"
        calls = sources.calls()
        server = {
            "status": "draining" if sources.admission.draining else "up",
            "uptime": int(trio.current_time() - self._started_at_s),
            "activeSessions": calls.active,
            "memoryUsage": _memory(),
        }
        spool = store.spool.pending_records
        database["spooledRecords"] = spool
        database["writes"] = _writes(store)
        if database["status"] == "up" and not store.database_up:
            # SELECT 1 answers, yet the records do not get in: that is down for us.
            database["status"] = "down"
            if details and store.last_error:
                database["error"] = store.last_error
        if database["status"] == "down":
            status = "unhealthy"
        elif spool or model_failing or sources.admission.draining:
            status = "degraded"
        else:
            status = "healthy"
        body = {
            "status": status,
            "timestamp": datetime.now(UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "services": {
                "database": database,
                "openai": openai,
                "twilio": {"status": sources.twilio},
                "server": server,
            },
            "configWarnings": [
                {"code": w.code, "message": w.message, "projects": list(w.projects)}
                for w in (sources.config_warnings() if sources.config_warnings else [])
            ],
        }
        return Response(503 if status == "unhealthy" else 200, body)

    async def _database(self) -> dict[str, Any]:
        began_s = time.perf_counter()
        try:
            await ask_store(self._sources.queries, Ping(), timeout_s=DB_CHECK_TIMEOUT_S)
        except StoreUnavailable as exc:
            return {"status": "down", "error": str(exc)}
        return {"status": "up", "latency": round((time.perf_counter() - began_s) * 1000, 1)}

    def metrics(self) -> Response:
        sources = self._sources
        snapshot = Snapshot(
            metrics=sources.metrics(),
            calls=sources.calls(),
            mailboxes=sources.mailboxes(),
            store=sources.store(),
            alerts=sources.alerts(),
            http_requests=sources.http_requests(),
            uptime_s=trio.current_time() - self._started_at_s,
            draining=sources.admission.draining,
            instance={
                "worker": "-" if sources.worker is None else str(sources.worker),
                "pid": str(os.getpid()),
            },
            refusals=sources.refusals.statistics() if sources.refusals else {},
            projects=tuple(sorted(sources.projects())) if sources.projects else (),
            actors=tuple(child.id for child in sources.supervisor().children),
            http_routes=sources.http_routes,
        )
        return Response(
            200,
            render(snapshot).encode(),
            content_type=b"text/plain; version=0.0.4; charset=utf-8",
        )

    def stats(self) -> Response:
        sources = self._sources
        metrics = sources.metrics()
        supervisor = sources.supervisor()
        body = {
            "worker": sources.worker,
            "pid": os.getpid(),
            "admission": sources.admission.state,
            "calls": asdict(sources.calls()),
            "supervisor": {
                "restartsTotal": supervisor.restarts_total,
                "stopping": supervisor.stopping,
                "children": [asdict(child) for child in supervisor.children],
            },
            "mailboxes": [asdict(box) for box in sources.mailboxes()],
            "store": asdict(sources.store()),
            "alerts": asdict(sources.alerts()),
            "earlySessions": asdict(sources.early()),
            "routing": _routing(
                sources.routing() if sources.routing else None, sources.store().routing_listening
            ),
            "load": asdict(sources.load()) if sources.load else None,
            "metrics": {
                "samplesTotal": metrics.samples_total,
                "errorRates": metrics.error_rates,
                "eventLoopLagLastS": round(metrics.loop_lag_last_s, 4),
                "modelReconnectsTotal": metrics.model_reconnects_total,
                "modelRenewalsTotal": metrics.model_renewals_total,
                "bargeInsTotal": metrics.barge_ins_total,
            },
        }
        # The statistics' own field names become the API's camelCase; what they count by
        # (levels, channels, error kinds) is a fixed set of names too.
        return Response(200, camel_keys(body))


def _embedded(stats: EmbeddedPostgresStatistics, *, details: bool) -> dict[str, Any]:
    """The engine's own PostgreSQL: whether it runs, how often it was restarted, and
    how it last ended (its server log's tail names paths: the admin token only)."""
    body: dict[str, Any] = {"status": stats.state, "restarts": stats.restarts_total}
    if stats.down_since_s is not None:
        body["downForS"] = round(trio.current_time() - stats.down_since_s, 1)
    last = stats.last_exit
    if last is not None:
        body["lastExit"] = {
            "pid": last.pid,
            "how": last.description,
            "secondsAgo": round(trio.current_time() - last.at_s, 1),
        }
        if details:
            body["lastExit"]["serverLog"] = last.log_tail
    return body


def _routing(routing: RoutingStatistics | None, listening: bool) -> dict[str, Any] | None:
    """The snapshot calls are routed from: its version, size and age; and whether the
    store's LISTEN, which tells it of changes, is connected."""
    if routing is None:
        return None
    body = asdict(routing)
    body["ageS"] = round(trio.current_time() - body.pop("loaded_at_s"), 1)
    return body | {"listening": listening}


def _memory() -> dict[str, int]:
    """Resident memory now (Linux /proc) and the peak, in bytes."""
    usage = {"maxRssBytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                usage["rssBytes"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return usage


def _writes(store: StoreStatistics) -> dict[str, Any]:
    """How the store's writes are going: the honest half of the database's health."""

    def seconds(value: float | None) -> float | None:
        return None if value is None else round(value, 1)

    return {
        "lastOk": store.last_write_ok,
        "lastSecondsAgo": seconds(store.last_write_age_s),
        "oldestUnwrittenSeconds": seconds(store.oldest_unwritten_age_s),
        "setAside": store.records_set_aside,
        "spilledToSpool": store.records_spilled_total,
        "lost": store.records_lost_total,
    }
