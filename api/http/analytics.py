"""The analytics API: what each business's calls looked like.

    GET /analytics/project/{projectId}?from=&to=                  summary of a window
    GET /analytics/project/{projectId}/recent?limit=&cursor=      latest calls, paged
    GET /analytics/project/{projectId}/statistics?start=&end=     per local day
    GET /analytics/project/{projectId}/calls/{callSid}            one call, its functions

Access: ``Authorization: Bearer <key>``. A project's API key reads that project only;
``ADMIN_TOKEN`` reads every project. No token, an unknown or a revoked key: 401. A key
for another project: 403, whether or not the asked project exists (a key never learns
which projects exist). Bad parameters: 400 naming the parameter; an unknown project (for
the admin token): 404; a call that is not the project's: 404, whether or not it exists.
The key check, the project's time zone and the query run as one unit on the store's
query lane.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from actors.store import analytics
from actors.store.call_detail import CallNotFound, call_detail
from actors.store.queries import StoreBusy, StoreUnavailable, ask_store
from api.http.asgi import Response, error
from api.http.token_auth import ANALYTICS_REALM, token_matches, unauthorized
from engine.analytics_params import (
    Cursor,
    InvalidParameter,
    decode_cursor,
    encode_cursor,
    limit,
    window,
)
from engine.key_limits import KeyLimits
from engine.refusals import Refusals
from engine.routing import hash_key

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from actors.store.db import Connection
    from actors.store.queries import StoreQuery
    from api.http.asgi import Request
    from engine.config import Secret
    from engine.mailbox import Outbox
    from engine.routing import RoutingSnapshot

ANALYTICS_TIMEOUT_S = 10.0
_ROUTE = re.compile(
    r"/analytics/project/(?P<id>[^/]+)(?P<view>/recent|/statistics|/calls/(?P<sid>[^/]*))?"
)
ROUTES = {
    ("GET", "/analytics/project/{projectId}"),
    ("GET", "/analytics/project/{projectId}/recent"),
    ("GET", "/analytics/project/{projectId}/statistics"),
    ("GET", "/analytics/project/{projectId}/calls/{callSid}"),
}
# A call's key is Twilio's CallSid (CA and 32 hex digits); a record that arrived from
# Vapi alone may carry Vapi's id instead. Either is short and of these characters.
# A CallSid, or the key of a Vapi report whose call this engine never saw (vapi:<id>,
# actors/store/writes.py).
_CALL_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}|vapi:[A-Za-z0-9_-]{1,59}")


# Per key: the dashboard reads three routes at once; a script polling faster than a
# few times a second is turned away with 429 and Retry-After.
KEY_CONCURRENCY = 4
KEY_RATE_PER_S = 5.0
KEY_BURST = 20
# A read that cannot even queue on the read lane is answered 503 at once.
LANE_QUEUE_TIMEOUT_S = 0.5


class AnalyticsApi:
    def __init__(
        self,
        queries: Outbox[StoreQuery],
        admin_token: Secret | None,
        *,
        routes: Callable[[], RoutingSnapshot],
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        comparison_rate_per_min_usd: float | None = None,
        refusals: Refusals | None = None,
    ) -> None:
        self._queries = queries  # the store's read lane, apart from call setup
        self._routes = routes  # keys and projects from memory: a stranger costs no query
        self._comparison = comparison_rate_per_min_usd
        self._admin_token = admin_token.reveal().encode() if admin_token else None
        self._now = now
        self._refusals = refusals or Refusals()
        self._limits = KeyLimits(
            concurrency=KEY_CONCURRENCY, rate_per_s=KEY_RATE_PER_S, burst=KEY_BURST
        )

    async def handle(self, request: Request) -> Response:
        found = _ROUTE.fullmatch(request.path)
        if found is None:
            return error(404, f"no route for {request.path}")
        if request.method not in ("GET", "HEAD"):
            return Response(
                405, {"error": f"{request.method} not allowed on {request.path}; use GET"},
                [(b"allow", b"GET")],
            )  # fmt: skip
        token = request.bearer_token()
        if token is None:
            self._refusals.refuse("analytics", "no_key")
            return unauthorized("missing API key (Authorization: Bearer <key>)", ANALYTICS_REALM)
        project_id, snapshot = found["id"], self._routes()
        if token_matches(token, self._admin_token):
            key = "admin"
            if project_id not in snapshot.projects:
                return error(404, f"no project {project_id!r}")
        else:
            key = hash_key(token)
            readable = snapshot.key_projects.get(key)
            if readable is None:
                self._refusals.refuse("analytics", "unknown_key")
                return unauthorized("unknown or revoked API key", ANALYTICS_REALM)
            if readable != project_id:
                self._refusals.refuse("analytics", "other_project")
                return error(403, "this API key reads another project")
        params = {name: values[-1] for name, values in request.query.items() if values[-1]}
        try:
            if found["sid"] is not None:
                work = _call_work(project_id, found["sid"])
            else:
                work = self._work(found["view"] or "", project_id, snapshot, params)
        except InvalidParameter as exc:
            return error(400, str(exc), field=exc.field)
        refused = self._limits.begin(key, trio.current_time())
        if refused is not None:
            self._refusals.refuse("analytics", f"key_{refused.reason}")
            return _retry_later(
                429, f"too many requests for this key ({refused.reason})", refused.retry_after_s
            )
        try:
            body = await ask_store(
                self._queries,
                work,
                timeout_s=ANALYTICS_TIMEOUT_S,
                queue_timeout_s=LANE_QUEUE_TIMEOUT_S,
            )
        except InvalidParameter as exc:
            return error(400, str(exc), field=exc.field)
        except CallNotFound as exc:
            return error(404, str(exc))
        except StoreBusy:
            self._refusals.refuse("analytics", "lane_full")
            return _retry_later(503, "too many analytics reads are waiting; try again", 1)
        except StoreUnavailable as exc:
            return error(503, f"database unavailable: {exc}; try again")
        finally:
            self._limits.end(key)
        return Response(200, body)

    def _work(
        self, view: str, project_id: str, snapshot: RoutingSnapshot, params: dict[str, str]
    ) -> Callable[[Connection], Awaitable[dict[str, Any]]]:
        """The query for one view, its parameters checked first (``InvalidParameter``):
        nothing malformed or unbounded reaches SQL."""
        timezone = snapshot.projects[project_id].timezone
        if view == "/recent":
            count, cursor = limit(params), decode_cursor(params.get("cursor"))
            return partial(_recent, project_id=project_id, count=count, cursor=cursor)
        if view == "/statistics":
            days = window(params, timezone, self._now(), names=("start", "end"), dates_only=True)
            return partial(analytics.daily, project_id=project_id, window=days)
        days = window(params, timezone, self._now())
        comparison = self._comparison
        return partial(
            analytics.summary,
            project_id=project_id,
            window=days,
            comparison_rate_per_min_usd=comparison,
        )


def _call_work(project_id: str, call_sid: str) -> Callable[[Connection], Awaitable[dict[str, Any]]]:
    if not _CALL_KEY.fullmatch(call_sid):
        raise InvalidParameter(
            "callSid", "expected a CallSid (CA and 32 hex digits) or vapi:<Vapi call id>"
        )
    return partial(call_detail, project_id=project_id, call_sid=call_sid)


async def _recent(
    connection: Connection, *, project_id: str, count: int, cursor: Cursor | None
) -> dict[str, Any]:
    calls, following = await analytics.recent(connection, project_id, count, cursor)
    next_cursor = encode_cursor(Cursor(*following)) if following else None
    return {"projectId": project_id, "calls": calls, "nextCursor": next_cursor}


def _retry_later(status: int, message: str, retry_after_s: int) -> Response:
    return Response(status, {"error": message}, [(b"retry-after", str(retry_after_s).encode())])
