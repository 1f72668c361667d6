"""The supervision tree, as one table: OTP's child specs.

Each row says what a child is, how it is restarted, how long it may take to stop and
what its ``task_status.started()`` promises. From the rows come the start order (top to
bottom), the stop order (bottom to top), the supervisor's ``ChildSpec`` list and the
shutdown watchdog's deadline; docs/architecture.md's tree and child table are rendered
from it (``python -m api.root.architecture``, checked by a test). The builder
(api/root/build.py) supplies each row's run function, by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from actors.call import STOP_BUDGET_S
from engine.children import KILL_GRACE_S
from engine.supervisor import ChildSpec, RestartIntensity, RestartType

if TYPE_CHECKING:
    from collections.abc import Mapping

    from engine.children import ChildFn

ROOT_NAME = "afterhours"
# Three restarts in a minute, all children together (as OTP counts): more is a fault a
# restart will not cure, and the process exits 3 for its orchestrator to restart whole.
ROOT_INTENSITY = RestartIntensity(max_restarts=3, period_s=60.0)

STORE_SHUTDOWN_S = 10.0  # room to write the last batches
SERVICE_SHUTDOWN_S = 3.0
API_SHUTDOWN_S = 5.0
# After the drain, the calls still live are ended politely: each says goodbye, within its
# own stop budget, all in parallel; two kill graces for the stragglers' cleanup.
CALLS_SHUTDOWN_S = STOP_BUDGET_S + 2 * KILL_GRACE_S
# Outside the tree, after it: the shared HTTP client, then the embedded PostgreSQL.
HTTP_CLOSE_TIMEOUT_S = 2.0  # the shared HTTP client's idle connections, closed at the end
EMBEDDED_POSTGRES_STOP_S = 10.0  # fast shutdown, then SIGKILL: 5 s each at most


@dataclass(frozen=True, slots=True)
class Child:
    """One row of the tree."""

    name: str
    runs: str  # the class whose ``run`` is the child
    restart: RestartType
    shutdown_s: float  # ask, wait this long, then cancel (and wait KILL_GRACE_S)
    started_means: str  # what task_status.started() promises
    role: str  # one line, for the map
    only_when: str | None = None  # a condition, for a child not every engine runs
    budget_note: str = ""  # what the budget covers, when it is not obvious


TREE: tuple[Child, ...] = (
    Child(
        "store",
        "StoreActor",
        RestartType.PERMANENT,
        STORE_SHUTDOWN_S,
        "pool open, migrations applied (a restart: at once, spooling until the database answers)",
        "the only Postgres user: batches writes, runs queries, spools in an outage",
        budget_note="the last batches written",
    ),
    Child(
        "routing",
        "RoutingActor",
        RestartType.PERMANENT,
        SERVICE_SHUTDOWN_S,
        "its first snapshot loaded: no call is answered before",
        "the in-memory routing snapshot calls are answered from",
    ),
    Child(
        "metrics",
        "MetricsAggregator",
        RestartType.PERMANENT,
        SERVICE_SHUTDOWN_S,
        "ready to fold",
        "counters, histograms, error rates",
    ),
    Child(
        "load",
        "LoadMonitor",
        RestartType.PERMANENT,
        SERVICE_SHUTDOWN_S,
        "at once (it admits every call until its first reading)",
        "CPU share and event-loop lag, for admission by load",
    ),
    Child(
        "alerts",
        "AlertActor",
        RestartType.PERMANENT,
        SERVICE_SHUTDOWN_S,
        "ready to route",
        "event_log, console, webhook and email; folds repeats",
        budget_note="its channels get 2 s to drain",
    ),
    Child(
        "model-simulator",
        "SimulatedModel",
        RestartType.PERMANENT,
        SERVICE_SHUTDOWN_S,
        "listening on 127.0.0.1",
        "the simulated Realtime model calls talk to",
        only_when="without OPENAI_API_KEY",
    ),
    Child(
        "early",
        "EarlySessions",
        RestartType.PERMANENT,
        SERVICE_SHUTDOWN_S,
        "ready",
        "model sessions opened at webhook time",
        budget_note="held sessions closed together, 2 s at most",
    ),
    Child(
        "media",
        "MediaServer",
        RestartType.PERMANENT,
        SERVICE_SHUTDOWN_S,
        "bound to MEDIA_PORT",
        "the Twilio media stream listener",
        budget_note="stopped after the calls group",
    ),
    Child(
        "calls",
        "DynamicGroup",
        RestartType.PERMANENT,
        CALLS_SHUTDOWN_S,
        "accepting calls",
        "simple_one_for_one group of temporary call actors",
        budget_note=(
            f"after the drain: each call's {STOP_BUDGET_S:g} s STOP_BUDGET_S, goodbye heard "
            f"and record written, plus {2 * KILL_GRACE_S:g} s"
        ),
    ),
    Child(
        "api",
        "ApiServer",
        RestartType.PERMANENT,
        API_SHUTDOWN_S,
        "bound to HOST:PORT",
        "Hypercorn serving the ASGI app: health, metrics, analytics, admin, webhooks",
        budget_note="HTTP requests get 2 s",
    ),
)


def child_specs(runs: Mapping[str, ChildFn]) -> list[ChildSpec]:
    """The supervisor's specs, in the table's order, with the run function the builder
    made for each row. A row without a condition must have one; an unknown name is a
    bug in the builder: both fail at once, before anything starts."""
    known = {child.name for child in TREE}
    unknown = sorted(set(runs) - known)
    if unknown:
        raise ValueError(f"no row in the tree for {unknown}")
    specs = []
    for child in TREE:
        run = runs.get(child.name)
        if run is None:
            if child.only_when is None:
                raise ValueError(f"child {child.name!r} has no run function")
            continue
        specs.append(ChildSpec(child.name, run, child.restart, child.shutdown_s))
    return specs


def shutdown_deadline_s(drain_timeout_s: float) -> float:
    """The longest an orderly stop can take when every budget is spent in full: the
    drain, then every child's budget and kill grace (children stop one at a time), then
    the shared HTTP client and the database."""
    children_s = sum(child.shutdown_s + KILL_GRACE_S for child in TREE)
    return drain_timeout_s + children_s + HTTP_CLOSE_TIMEOUT_S + EMBEDDED_POSTGRES_STOP_S
