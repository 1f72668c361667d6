"""What the store does for each query (engine/store_queries.py): the query's SQL, run in
the transaction the store opened for it.

One handler per query type, registered in ``HANDLERS``; a test checks that every query
type has one. A handler reads the query's fields and calls the SQL of its module
(admin.py, analytics.py, call_record.py, routing.py): the asker has parsed and authorised
everything already, so nothing here decides who may read what beyond the project the
query names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from actors.store import admin, analytics, routing
from actors.store.call_detail import call_detail
from actors.store.call_record import get_call
from engine.analytics_params import Cursor
from engine.store_queries import (
    AddPhoneNumber,
    AnalyticsCall,
    AnalyticsDaily,
    AnalyticsRecent,
    AnalyticsSummary,
    ClaimStream,
    CreateApiKey,
    CreatedKey,
    CreateProject,
    DeletePhoneNumber,
    DeleteProject,
    GetCall,
    GetProject,
    ListApiKeys,
    ListPhoneNumbers,
    ListProjects,
    LoadRouting,
    PatchPhoneNumber,
    PatchProject,
    Ping,
    PutProject,
    Query,
    RecentCalls,
    RevokeApiKey,
    RoutingVersion,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from actors.store.db import Connection
    from engine.routing import RoutingSnapshot

    Handler = Callable[[Connection, Any], Awaitable[Any]]

Q = TypeVar("Q", bound=Query[Any])

HANDLERS: dict[type[Query[Any]], Handler] = {}


def _handles(kind: type[Q]) -> Callable[[Callable[[Connection, Q], Awaitable[Any]]], Handler]:
    def register(handler: Callable[[Connection, Q], Awaitable[Any]]) -> Handler:
        HANDLERS[kind] = handler
        return handler

    return register


async def run_query(connection: Connection, query: Query[Any]) -> Any:
    """The answer to ``query``, from its handler."""
    handler = HANDLERS.get(type(query))
    if handler is None:  # a query type added without its handler (the test catches it)
        raise TypeError(f"the store has no handler for {type(query).__name__}")
    return await handler(connection, query)


@_handles(Ping)
async def _ping(connection: Connection, query: Ping) -> None:
    await connection.fetchval("SELECT 1")


# -- call setup ---------------------------------------------------------------------------


@_handles(RoutingVersion)
async def _routing_version(connection: Connection, query: RoutingVersion) -> int:
    return await routing.routing_version(connection)


@_handles(LoadRouting)
async def _load_routing(connection: Connection, query: LoadRouting) -> RoutingSnapshot:
    return await routing.load_snapshot(connection)


@_handles(ClaimStream)
async def _claim_stream(connection: Connection, query: ClaimStream) -> bool:
    return await routing.claim_stream(
        connection, query.call_sid, query.stream_sid, query.project_id, query.engine_instance
    )


# -- analytics: each bounded to the project the query names --------------------------------


@_handles(AnalyticsSummary)
async def _summary(connection: Connection, query: AnalyticsSummary) -> dict[str, Any]:
    return await analytics.summary(
        connection, query.project_id, query.window, query.comparison_rate_per_min_usd
    )


@_handles(AnalyticsDaily)
async def _daily(connection: Connection, query: AnalyticsDaily) -> dict[str, Any]:
    return await analytics.daily(connection, query.project_id, query.window)


@_handles(AnalyticsRecent)
async def _recent(connection: Connection, query: AnalyticsRecent) -> RecentCalls:
    calls, following = await analytics.recent(
        connection, query.project_id, query.limit, query.cursor
    )
    return RecentCalls(calls, Cursor(*following) if following else None)


@_handles(AnalyticsCall)
async def _call(connection: Connection, query: AnalyticsCall) -> dict[str, Any]:
    return await call_detail(connection, query.project_id, query.call_sid)


# -- admin --------------------------------------------------------------------------------


@_handles(ListProjects)
async def _list_projects(connection: Connection, query: ListProjects) -> list[dict[str, Any]]:
    return await admin.list_projects(connection)


@_handles(GetProject)
async def _get_project(connection: Connection, query: GetProject) -> dict[str, Any]:
    return await admin.get_project(connection, query.project_id)


@_handles(CreateProject)
async def _create_project(connection: Connection, query: CreateProject) -> dict[str, Any]:
    return await admin.create_project(connection, query.project)


@_handles(PutProject)
async def _put_project(connection: Connection, query: PutProject) -> tuple[dict[str, Any], bool]:
    return await admin.put_project(connection, query.project, keep_secret=query.keep_secret)


@_handles(PatchProject)
async def _patch_project(connection: Connection, query: PatchProject) -> dict[str, Any]:
    return await admin.patch_project_row(connection, query.project_id, query.changes)


@_handles(DeleteProject)
async def _delete_project(connection: Connection, query: DeleteProject) -> None:
    await admin.delete_project(connection, query.project_id)


@_handles(AddPhoneNumber)
async def _add_number(connection: Connection, query: AddPhoneNumber) -> dict[str, Any]:
    return await admin.add_phone_number(connection, query.project_id, query.number)


@_handles(ListPhoneNumbers)
async def _list_numbers(connection: Connection, query: ListPhoneNumbers) -> list[dict[str, Any]]:
    return await admin.list_phone_numbers(connection, query.project_id)


@_handles(PatchPhoneNumber)
async def _patch_number(connection: Connection, query: PatchPhoneNumber) -> dict[str, Any]:
    return await admin.patch_phone_number_row(connection, query.number, query.changes)


@_handles(DeletePhoneNumber)
async def _delete_number(connection: Connection, query: DeletePhoneNumber) -> None:
    await admin.delete_phone_number(connection, query.number)


@_handles(CreateApiKey)
async def _create_key(connection: Connection, query: CreateApiKey) -> CreatedKey:
    return await admin.create_api_key(connection, query.project_id, query.name)


@_handles(ListApiKeys)
async def _list_keys(connection: Connection, query: ListApiKeys) -> list[dict[str, Any]]:
    return await admin.list_api_keys(connection, query.project_id)


@_handles(RevokeApiKey)
async def _revoke_key(connection: Connection, query: RevokeApiKey) -> None:
    await admin.revoke_api_key(connection, query.key_id)


@_handles(GetCall)
async def _get_call(connection: Connection, query: GetCall) -> dict[str, Any]:
    return await get_call(connection, query.call_sid)
