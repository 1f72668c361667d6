"""The store's query protocol (engine/store_queries.py) without a database: every query
has a handler in the store; ``ask_store`` answers, raises the store's error, refuses at
once when the lane stays full and gives up after its timeout (under Trio's mock clock,
against a stand-in for the store's lane); and the analytics API sends a plain query
only once it has checked the key and parsed the parameters."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import outcome
import pytest
import trio
import trio.testing

from actors.store.actor import StoreActor
from actors.store.handlers import HANDLERS
from api.http.analytics import AnalyticsApi
from api.http.asgi import Request
from engine import store_queries
from engine.analytics_params import Window
from engine.config import Secret
from engine.lifecycle import StopSignal
from engine.mailbox import Mailbox, OverflowPolicy
from engine.messages import StoreWrite
from engine.projects import parse_project
from engine.routing import RoutingSnapshot, hash_key
from engine.store_queries import (
    AnalyticsCall,
    AnalyticsDaily,
    AnalyticsRecent,
    AnalyticsSummary,
    CreateProject,
    GetProject,
    NotFound,
    PatchProject,
    Query,
    StoreBusy,
    StoreQuery,
    StoreUnavailable,
    ask_store,
)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def test_every_query_has_a_handler_in_the_store() -> None:
    kinds = {
        value
        for value in vars(store_queries).values()
        if inspect.isclass(value) and issubclass(value, Query) and value is not Query
    }
    assert len(kinds) == 22
    assert set(HANDLERS) == kinds


def test_a_query_is_a_value() -> None:
    query = GetProject("acme")
    assert query == GetProject("acme")
    assert query != GetProject("other")
    with pytest.raises(dataclasses.FrozenInstanceError):
        query.project_id = "other"  # type: ignore[misc]


def lane(size: int = 4) -> Mailbox[StoreQuery]:
    return Mailbox("store-queries", size, OverflowPolicy.BLOCK)


async def answering(queries: Mailbox[StoreQuery], answer: outcome.Outcome[Any]) -> None:
    """A stand-in for the store's lane: every query gets ``answer``."""
    while True:
        query = await queries.receive()
        query.reply.send_nowait(answer)


async def test_ask_store_returns_the_answer_or_raises_the_stores_error() -> None:
    queries = lane()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(answering, queries, outcome.Value({"id": "acme"}))
        assert await ask_store(queries, GetProject("acme"), timeout_s=1) == {"id": "acme"}
        nursery.cancel_scope.cancel()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(answering, queries, outcome.Error(NotFound("no project 'x'")))
        with pytest.raises(NotFound, match="no project 'x'"):
            await ask_store(queries, GetProject("x"), timeout_s=1)
        nursery.cancel_scope.cancel()


async def test_a_full_lane_is_refused_after_the_queue_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queries = lane(1)
    queries.send_nowait(StoreQuery(GetProject("ahead"), trio.open_memory_channel[Any](1)[0]))
    began_s = trio.current_time()
    with pytest.raises(StoreBusy):
        await ask_store(queries, GetProject("acme"), timeout_s=10, queue_timeout_s=0.5)
    assert trio.current_time() - began_s == pytest.approx(0.5)


async def test_no_answer_is_unavailable_after_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queries = lane()
    began_s = trio.current_time()
    with pytest.raises(StoreUnavailable, match="did not answer within 2 s"):
        await ask_store(queries, GetProject("acme"), timeout_s=2)
    assert trio.current_time() - began_s == pytest.approx(2)
    assert queries.receive_nowait().query == GetProject("acme")  # it was queued


# -- the analytics API: authorised and parsed before anything is sent ----------------------

ACME_KEY, OTHER_KEY, ADMIN = "ahk_a_acme", "ahk_o_other", "admin-token"


def analytics() -> tuple[AnalyticsApi, Mailbox[StoreQuery]]:
    projects = {
        "acme": parse_project({"id": "acme", "name": "Acme", "timezone": "America/Chicago"}),
        "other": parse_project({"id": "other", "name": "Other", "timezone": "UTC"}),
    }
    keys = {hash_key(ACME_KEY): "acme", hash_key(OTHER_KEY): "other"}
    snapshot = RoutingSnapshot.of(1, {}, projects, keys)
    queries = lane()
    api = AnalyticsApi(queries, Secret(ADMIN), routes=lambda: snapshot, now=lambda: NOW)
    return api, queries


def get(path: str, token: str | None, **query: str) -> Request:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return Request("GET", path, headers, {name: [value] for name, value in query.items()})


async def sent(api: AnalyticsApi, queries: Mailbox[StoreQuery], request: Request) -> object:
    """The query the API sends for ``request`` (answered with an empty body)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(api.handle, request)
        query = await queries.receive()
        query.reply.send_nowait(outcome.Value({}))
    return query.query


@pytest.mark.parametrize(
    ("token", "path", "status"),
    [
        (None, "/analytics/project/acme", 401),
        ("ahk_nope_nope", "/analytics/project/acme", 401),
        (ACME_KEY, "/analytics/project/other", 403),
        (ACME_KEY, "/analytics/project/other/recent", 403),
        (ACME_KEY, "/analytics/project/other/statistics", 403),
        (ACME_KEY, "/analytics/project/other/calls/CA1", 403),
        (ACME_KEY, "/analytics/project/ghost", 403),
        (ADMIN, "/analytics/project/ghost", 404),
        (ACME_KEY, "/analytics/project/acme/calls/CA1'--", 400),
        (ACME_KEY, "/analytics/project/acme/recent?limit=0", 400),
    ],
)
async def test_a_refused_request_sends_nothing_to_the_store(
    token: str | None, path: str, status: int
) -> None:
    api, queries = analytics()
    route, _, parameter = path.partition("?")
    name, _, value = parameter.partition("=")
    response = await api.handle(get(route, token, **({name: value} if name else {})))
    assert response.status == status
    assert queries.statistics().queued == 0


async def test_each_view_sends_a_plain_query_for_the_keys_project() -> None:
    api, queries = analytics()
    base = "/analytics/project/acme"
    recent = await sent(api, queries, get(f"{base}/recent", ACME_KEY, limit="5"))
    call = await sent(api, queries, get(f"{base}/calls/CA1", ACME_KEY))
    daily = await sent(
        api, queries, get(f"{base}/statistics", ACME_KEY, start="2026-11-01", end="2026-11-02")
    )
    admin_summary = await sent(
        api, queries, get("/analytics/project/other", ADMIN, **{"from": "2026-11-10"})
    )
    assert recent == AnalyticsRecent("acme", 5, None)
    assert call == AnalyticsCall("acme", "CA1")
    assert isinstance(daily, AnalyticsDaily)
    assert daily.project_id == "acme"
    # Local days in Chicago (the project's zone): CDT until 1 November, CST after.
    assert daily.window == Window(
        datetime(2026, 11, 1, 5, tzinfo=UTC), datetime(2026, 11, 3, 6, tzinfo=UTC),
        date(2026, 11, 1), date(2026, 11, 2), "America/Chicago",
    )  # fmt: skip
    assert isinstance(admin_summary, AnalyticsSummary)
    assert admin_summary.project_id == "other"
    assert admin_summary.window.timezone == "UTC"


# -- against a real PostgreSQL (the engine half) -------------------------------------------


async def test_equal_queries_at_once_are_each_answered(fresh_database: str, tmp_path: Path) -> None:
    """A lane holds a slot per envelope, never per query value: equal queries sent at the
    same moment (and queries no set could hold: a patch carries a dict) all get answers."""
    inbox: Mailbox[StoreWrite] = Mailbox("store", 8, OverflowPolicy.BLOCK)
    queries = lane(8)
    store = StoreActor(fresh_database, inbox, spool_dir=tmp_path, queries=queries)
    project = parse_project({"id": "acme", "name": "Acme", "timezone": "UTC"})
    answers: list[tuple[str, str]] = []
    stop = StopSignal()

    async def ask(query: GetProject | PatchProject) -> None:
        view = await ask_store(queries, query, timeout_s=10)
        answers.append((type(query).__name__, view["name"]))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run, stop)
            await ask_store(queries, CreateProject(project), timeout_s=10)
            async with trio.open_nursery() as asking:
                for _ in range(3):
                    asking.start_soon(ask, GetProject("acme"))
                    asking.start_soon(ask, PatchProject("acme", {"name": "Acme Plumbing"}))
            stop.request()
    assert sorted(kind for kind, _ in answers) == ["GetProject"] * 3 + ["PatchProject"] * 3
    assert {name for kind, name in answers if kind == "PatchProject"} == {"Acme Plumbing"}
