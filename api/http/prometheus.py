"""``GET /metrics`` in the Prometheus text exposition format (version 0.0.4). Pure: a
snapshot in, text out.

Conventions of prometheus-client: counters end in ``_total``, durations are
``_seconds`` histograms with cumulative ``le`` buckets, ``_sum`` and ``_count``; labels
are bounded sets (project, outcome, status, mailbox, actor, direction), never a CallSid.

Every counter whose label values are known in advance (statuses, outcomes, error
classes, alert kinds and levels, refusal reasons, the actors, the projects of the routing
snapshot) has each of its series from the start, at 0: ``rate()`` and ``increase()``
see the first failure only as a step from a sample that was already there, so a series
born with its first event would hide exactly the first one from an alert.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, get_args

from actors.call.errors import ErrorClass
from actors.metrics import ErrorKind
from engine.metric_samples import CallStatus, FunctionOutcome
from engine.refusals import KNOWN_REASONS

if TYPE_CHECKING:
    from actors.alerts import AlertStatistics
    from actors.metrics import MetricsStatistics
    from actors.store.actor import StoreStatistics
    from engine.group import GroupStatistics
    from engine.histogram import HistogramSnapshot
    from engine.mailbox import MailboxStatistics

PREFIX = "afterhours_"
CALL_STATUSES: tuple[str, ...] = get_args(CallStatus)
FUNCTION_OUTCOMES: tuple[str, ...] = get_args(FunctionOutcome)
MODEL_CONNECTION_OUTCOMES = ("ok", "failed")
# actors/call/core.py counts each ErrorClass by its value, and failed responses.
MODEL_ERROR_CLASSES = (*(c.value for c in ErrorClass), "failed_response")
HIGH_ERROR_RATE_KINDS: tuple[str, ...] = get_args(ErrorKind)


@dataclass(frozen=True)
class Snapshot:
    metrics: MetricsStatistics
    calls: GroupStatistics
    mailboxes: list[MailboxStatistics]
    store: StoreStatistics
    alerts: AlertStatistics
    http_requests: dict[tuple[str, int], int]
    uptime_s: float
    draining: bool
    instance: dict[str, str] = field(default_factory=dict)  # worker, pid
    refusals: dict[tuple[str, str], int] = field(default_factory=dict)  # (edge, reason)
    # Known in advance, so their counters start at 0: the routing snapshot's projects and
    # the supervised actors.
    projects: tuple[str, ...] = ()
    actors: tuple[str, ...] = ()
    http_routes: tuple[str, ...] = ()  # each gets code="500" at 0: the code alerted on


@dataclass
class _Text:
    lines: list[str] = field(default_factory=list)

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {PREFIX}{name} {help_text}")
        self.lines.append(f"# TYPE {PREFIX}{name} {kind}")

    def sample(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        self.lines.append(f"{PREFIX}{name}{_labels(labels)} {_number(value)}")

    def counter(
        self, name: str, help_text: str, values: dict[tuple[str, ...], int], keys: tuple[str, ...]
    ) -> None:
        self.family(name, "counter", help_text)
        for key, value in sorted(values.items()):
            self.sample(name, value, dict(zip(keys, key, strict=True)))

    def histogram(
        self, name: str, help_text: str, series: list[tuple[dict[str, str], HistogramSnapshot]]
    ) -> None:
        self.family(name, "histogram", help_text)
        for labels, histogram in series:
            for le, count in histogram.cumulative():
                self.sample(f"{name}_bucket", count, labels | {"le": le})
            self.sample(f"{name}_sum", histogram.sum_s, labels)
            self.sample(f"{name}_count", histogram.count, labels)


def _zeros(*labels: tuple[str, ...]) -> dict[tuple[str, ...], int]:
    """Every combination of the label values, at 0."""
    combinations: list[tuple[str, ...]] = [()]
    for values in labels:
        combinations = [(*done, value) for done in combinations for value in values]
    return dict.fromkeys(combinations, 0)


def render(snapshot: Snapshot) -> str:
    m = snapshot.metrics
    projects = snapshot.projects
    text = _Text()
    text.family("engine_info", "gauge", "This engine process: its worker index and pid.")
    text.sample("engine_info", 1, snapshot.instance)
    text.family("uptime_seconds", "gauge", "Seconds since the engine started.")
    text.sample("uptime_seconds", round(snapshot.uptime_s, 3))
    text.family("draining", "gauge", "1 while the engine drains before a stop.")
    text.sample("draining", 1 if snapshot.draining else 0)
    text.family("calls_active", "gauge", "Calls in progress on this instance.")
    text.sample("calls_active", snapshot.calls.active)
    text.counter(
        "calls_started_total",
        "Calls whose media stream started here, by project.",
        _zeros(projects) | {(p,): n for p, n in m.calls_started_total.items()},
        ("project",),
    )
    text.counter(
        "calls_total",
        "Calls that ended, by project and status (completed, missed, failed).",
        _zeros(projects, CALL_STATUSES) | {(p, s): n for (p, s), n in m.calls_total.items()},
        ("project", "status"),
    )
    text.counter(
        "function_calls_total",
        "Business function calls, by project and outcome (ok, error, timeout, cancelled).",
        _zeros(projects, FUNCTION_OUTCOMES)
        | {(p, o): n for (p, o), n in m.function_calls_total.items()},
        ("project", "outcome"),
    )
    text.histogram(
        "function_call_duration_seconds",
        "How long business functions took to answer.",
        [({}, m.function_call_seconds)],
    )
    text.counter(
        "model_connections_total",
        "Attempts to open a model session, by outcome (ok, failed).",
        _zeros(MODEL_CONNECTION_OUTCOMES) | {(k,): n for k, n in m.model_connections_total.items()},
        ("outcome",),
    )
    text.family(
        "model_errors_total", "counter", "Calls ended by the model: unreachable, error, lost."
    )
    text.sample("model_errors_total", m.model_errors_total)
    text.counter(
        "model_error_events_total",
        "Model error events and failed responses, by class (fatal, session_gone, race, "
        "recoverable, failed_response); most leave the call going.",
        _zeros(MODEL_ERROR_CLASSES) | {(k,): n for k, n in m.model_error_events_total.items()},
        ("class",),
    )
    text.family("model_reconnects_total", "counter", "Model sessions replaced after a drop.")
    text.sample("model_reconnects_total", m.model_reconnects_total)
    text.family(
        "model_session_renewals_total", "counter", "Model sessions renewed before their cap."
    )
    text.sample("model_session_renewals_total", m.model_renewals_total)
    text.family("barge_ins_total", "counter", "Times a caller interrupted the model.")
    text.sample("barge_ins_total", m.barge_ins_total)
    text.histogram(
        "time_to_first_audio_seconds",
        "From the call's start to the first model audio sent to the caller.",
        [({}, m.time_to_first_audio)],
    )
    text.histogram(
        "turn_latency_seconds",
        "From the caller's end of speech to the first model audio sent back.",
        [({}, m.turn_latency)],
    )
    text.histogram(
        "forwarding_latency_seconds",
        "From a frame read to it being written on the other socket, by direction.",
        [({"direction": "to_model"}, m.forwarding_to_model),
         ({"direction": "to_caller"}, m.forwarding_to_caller)],
    )  # fmt: skip
    text.histogram(
        "event_loop_lag_seconds",
        "How late a 0.5 s timer fires in the engine's event loop.",
        [({}, m.loop_lag)],
    )
    text.counter(
        "high_error_rate_alerts_total",
        "highErrorRate alerts raised, by kind (calls, function_calls).",
        _zeros(HIGH_ERROR_RATE_KINDS)
        | {(k,): n for k, n in m.high_error_rate_alerts_total.items()},
        ("kind",),
    )
    text.counter(
        "actor_restarts_total",
        "Restarts of supervised actors, by actor.",
        _zeros(snapshot.actors) | {(k,): n for k, n in m.restarts_total.items()},
        ("actor",),
    )
    text.family("supervisor_escalations_total", "counter", "Supervisors that gave up.")
    text.sample("supervisor_escalations_total", m.escalations_total)
    text.family("mailbox_queued", "gauge", "Messages waiting in each mailbox.")
    for box in snapshot.mailboxes:
        text.sample("mailbox_queued", box.queued, {"mailbox": box.name})
    text.counter(
        "mailbox_dropped_total",
        "Messages a full mailbox dropped, by mailbox (by its overflow policy).",
        {(box.name,): box.dropped_total for box in snapshot.mailboxes},
        ("mailbox",),
    )
    store = snapshot.store
    text.family("database_up", "gauge", "1 when the store's last database round trip worked.")
    text.sample("database_up", 1 if store.database_up else 0)
    text.family("store_records_written_total", "counter", "Records written to PostgreSQL.")
    text.sample("store_records_written_total", store.records_written_total)
    text.family("store_write_failures_total", "counter", "Batches PostgreSQL did not take.")
    text.sample("store_write_failures_total", store.write_failures_total)
    text.family("store_spool_records", "gauge", "Records spooled on disk awaiting replay.")
    text.sample("store_spool_records", store.spool.pending_records)
    alerts = snapshot.alerts
    text.counter(
        "alerts_total",
        "Alerts raised, by level (a folded group counts once).",
        {(k,): n for k, n in alerts.by_level.items()},
        ("level",),
    )
    text.family("alerts_folded_total", "counter", "Alerts folded into an earlier one.")
    text.sample("alerts_folded_total", alerts.folded_total)
    deliveries: dict[tuple[str, ...], int] = {}
    for channel, counts in alerts.channels.items():
        deliveries[(channel, "delivered")] = counts["delivered_total"]
        deliveries[(channel, "failed")] = counts["failed_total"]
    text.counter(
        "alert_deliveries_total",
        "Alerts sent outside, by channel and outcome (failed: given up after retries).",
        deliveries,
        ("channel", "outcome"),
    )
    text.counter(
        "http_requests_total",
        "HTTP requests answered, by route and status code.",
        _zeros(snapshot.http_routes, ("500",))
        | {(route, str(code)): n for (route, code), n in snapshot.http_requests.items()},
        ("route", "code"),
    )
    refusals: dict[tuple[str, ...], int] = {
        (edge, reason): 0 for edge, reasons in KNOWN_REASONS.items() for reason in reasons
    }
    refusals.update({(edge, reason): n for (edge, reason), n in snapshot.refusals.items()})
    text.counter(
        "refusals_total",
        "Requests, calls and connections refused at the edge, by edge and reason.",
        refusals,
        ("edge", "reason"),
    )
    return "\n".join(text.lines) + "\n"


def _labels(labels: dict[str, str] | None) -> str:
    if not labels:
        return ""
    shown = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
    return "{" + shown + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value))
