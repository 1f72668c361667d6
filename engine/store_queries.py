"""The store's query lanes as both sides see them: what may be asked, and the asking.

Writes that may wait (call records, events) go through the store's batching inbox; a
read, an admin change or a stream claim needs its answer now. The asker sends a query
on one of the store's query mailboxes (``store-queries`` for the APIs, ``store-setup``
for call setup) and waits for the outcome on its own reply channel, under a timeout: a
database that is away gives a quick ``StoreUnavailable``, never a hung request.

A query is a plain value: which query, for which project, with its parameters. The
asker has parsed them (engine/analytics_params.py, engine/projects.py) and authorised
the request (the analytics API checks the key against the routing snapshot) before
anything is sent; the store (actors/store/handlers.py) maps each query to its SQL and
runs it in one transaction. So no code of the asker's runs inside the store's
transaction, and the store can tell from the value alone what it is asked to do.

Each query names the type of its answer (``Query[T]``), so ``ask_store`` returns it
typed; the errors a query may answer with are below too, for the asker to catch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec
import outcome
import trio

from engine.errors import EngineError
from engine.routing import RoutingSnapshot

if TYPE_CHECKING:
    from collections.abc import Mapping

    from engine.analytics_params import Cursor, Window
    from engine.mailbox import Outbox
    from engine.phone_numbers import PhoneNumber
    from engine.projects import Project

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)  # a query's answer: only ever read


# -- the errors a query answers with ------------------------------------------------------


class StoreUnavailable(EngineError):
    """The database did not answer in time (or is away); try again later."""


class StoreBusy(StoreUnavailable):
    """The lane's queue stayed full: too much work is waiting already; try again later."""


class NotFound(EngineError):
    """The project, number, key or call named does not exist."""


class Conflict(EngineError):
    """A project with that id exists already."""


class CallNotFound(LookupError):
    """No such call in the project asked for: said in the same words whether the call
    belongs to another project or never was, so a key cannot learn another's calls."""


# -- the queries --------------------------------------------------------------------------


class Query(Generic[T_co]):
    """A question for the store whose answer is a ``T_co`` (the parameter only types
    the asker's result: nothing of it exists at run time)."""

    __slots__ = ()


# The health check.
@dataclass(frozen=True, slots=True)
class Ping(Query[None]):
    pass


# Call setup (the ``store-setup`` lane).
@dataclass(frozen=True, slots=True)
class RoutingVersion(Query[int]):
    """The routing tables' version, bumped by a trigger on every change."""


@dataclass(frozen=True, slots=True)
class LoadRouting(Query[RoutingSnapshot]):
    """Every project, number and live key hash: a new snapshot."""


@dataclass(frozen=True, slots=True)
class ClaimStream(Query[bool]):
    """Bind the call to this media stream, once; False when it already has one."""

    call_sid: str
    stream_sid: str
    project_id: str
    engine_instance: str | None = None


# Analytics (one project each: the asker has checked the key may read it).
@dataclass(frozen=True, slots=True)
class AnalyticsSummary(Query[dict[str, Any]]):
    project_id: str
    window: Window
    comparison_rate_per_min_usd: float | None = None


@dataclass(frozen=True, slots=True)
class AnalyticsDaily(Query[dict[str, Any]]):
    project_id: str
    window: Window


@dataclass(frozen=True, slots=True)
class RecentCalls:
    """A page of the latest calls, and where the next page starts (None: no more)."""

    calls: list[dict[str, Any]]
    following: Cursor | None


@dataclass(frozen=True, slots=True)
class AnalyticsRecent(Query[RecentCalls]):
    project_id: str
    limit: int
    cursor: Cursor | None = None


@dataclass(frozen=True, slots=True)
class AnalyticsCall(Query[dict[str, Any]]):
    """One call, if it is the project's (``CallNotFound`` otherwise)."""

    project_id: str
    call_sid: str


# Admin (the asker has checked the admin token).
@dataclass(frozen=True, slots=True)
class ListProjects(Query[list[dict[str, Any]]]):
    pass


@dataclass(frozen=True, slots=True)
class GetProject(Query[dict[str, Any]]):
    project_id: str


@dataclass(frozen=True, slots=True)
class CreateProject(Query[dict[str, Any]]):
    project: Project  # validated (engine/projects.py)


@dataclass(frozen=True, slots=True)
class PutProject(Query[tuple[dict[str, Any], bool]]):
    """Create or replace; the answer says whether it was created. With ``keep_secret``
    the stored function secret stays (the body did not mention it)."""

    project: Project
    keep_secret: bool = False


@dataclass(frozen=True, slots=True)
class PatchProject(Query[dict[str, Any]]):
    """Change some fields: validated in the transaction against the row as it is, locked,
    so two concurrent patches cannot lose each other's change."""

    project_id: str
    changes: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class DeleteProject(Query[None]):
    project_id: str


@dataclass(frozen=True, slots=True)
class AddPhoneNumber(Query[dict[str, Any]]):
    project_id: str
    number: PhoneNumber  # validated (engine/phone_numbers.py)


@dataclass(frozen=True, slots=True)
class ListPhoneNumbers(Query[list[dict[str, Any]]]):
    project_id: str | None = None  # None: every project's


@dataclass(frozen=True, slots=True)
class PatchPhoneNumber(Query[dict[str, Any]]):
    number: str
    changes: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class DeletePhoneNumber(Query[None]):
    number: str


class CreatedKey(msgspec.Struct, frozen=True):
    id: str
    project_id: str
    name: str
    key: str  # shown once, never stored


@dataclass(frozen=True, slots=True)
class CreateApiKey(Query[CreatedKey]):
    project_id: str
    name: str


@dataclass(frozen=True, slots=True)
class ListApiKeys(Query[list[dict[str, Any]]]):
    project_id: str


@dataclass(frozen=True, slots=True)
class RevokeApiKey(Query[None]):
    key_id: str


@dataclass(frozen=True, slots=True)
class GetCall(Query[dict[str, Any]]):
    """One call's operator record, whatever its project."""

    call_sid: str


# -- the asking ---------------------------------------------------------------------------


# eq=False: an envelope is itself, not its contents (two askers may send equal queries
# at once, and the lane's limiter holds a slot on behalf of each envelope).
@dataclass(frozen=True, slots=True, eq=False)
class StoreQuery:
    """What travels on a query lane: the query, and where its outcome goes."""

    query: Query[Any]
    reply: trio.MemorySendChannel[outcome.Outcome[Any]]


async def ask_store(
    lane: Outbox[StoreQuery],
    query: Query[T],
    *,
    timeout_s: float,
    queue_timeout_s: float | None = None,
) -> T:
    """Have the store answer ``query`` in one transaction; its answer, or its exception.
    With ``queue_timeout_s``, waiting for room in the lane's queue is bounded separately
    (``StoreBusy``): a request that cannot even queue is answered at once."""
    reply_send, reply_receive = trio.open_memory_channel[outcome.Outcome[Any]](1)
    queued = False
    try:
        with trio.fail_after(timeout_s):
            with trio.move_on_after(timeout_s if queue_timeout_s is None else queue_timeout_s):
                await lane.send(StoreQuery(query, reply_send))
                queued = True
            if not queued:
                raise StoreBusy("too many database reads are waiting")
            with reply_receive:
                answer = await reply_receive.receive()
    except trio.TooSlowError:
        raise StoreUnavailable(f"the database did not answer within {timeout_s:g} s") from None
    result: T = answer.unwrap()
    return result
