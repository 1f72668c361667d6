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

The key is checked and the parameters parsed here, from the routing snapshot in memory
(the key's project, the project's time zone) and engine/analytics_params.py, before
anything reaches the store: what goes down the store's read lane is a plain query for
one project (engine/store_queries.py), which the store maps to its SQL.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import trio

from api.http.asgi import Response, error
from api.http.token_auth import ANALYTICS_REALM, token_matches, unauthorized
from engine.analytics_params import InvalidParameter, decode_cursor, encode_cursor, limit, window
from engine.key_limits import KeyLimits
from engine.refusals import Refusals
from engine.routing import hash_key
from engine.store_queries import (
    AnalyticsCall,
    AnalyticsDaily,
    AnalyticsRecent,
    AnalyticsSummary,
    CallNotFound,
    RecentCalls,
    StoreBusy,
    StoreUnavailable,
    ask_store,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from api.http.asgi import Request
    from engine.config import Secret
    from engine.mailbox import Outbox
    from engine.routing import RoutingSnapshot
    from engine.store_queries import Query, StoreQuery

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
                query: Query[Any] = _call_query(project_id, found["sid"])
            else:
                query = self._query(found["view"] or "", project_id, snapshot, params)
        except InvalidParameter as exc:
            return error(400, str(exc), field=exc.field)
        refused = self._limits.begin(key, trio.current_time())
        if refused is not None:
            self._refusals.refuse("analytics", f"key_{refused.reason}")
            return _retry_later(
                429, f"too many requests for this key ({refused.reason})", refused.retry_after_s
            )
        try:
            answer = await ask_store(
                self._queries,
                query,
                timeout_s=ANALYTICS_TIMEOUT_S,
                queue_timeout_s=LANE_QUEUE_TIMEOUT_S,
            )
        except CallNotFound as exc:
            return error(404, str(exc))
        except StoreBusy:
            self._refusals.refuse("analytics", "lane_full")
            return _retry_later(503, "too many analytics reads are waiting; try again", 1)
        except StoreUnavailable as exc:
            return error(503, f"database unavailable: {exc}; try again")
        finally:
            self._limits.end(key)
        if isinstance(answer, RecentCalls):
            following = answer.following
            next_cursor = encode_cursor(following) if following is not None else None
            answer = {"projectId": project_id, "calls": answer.calls, "nextCursor": next_cursor}
        return Response(200, answer)

    def _query(
        self, view: str, project_id: str, snapshot: RoutingSnapshot, params: dict[str, str]
    ) -> Query[Any]:
        """The query for one view, its parameters checked first (``InvalidParameter``):
        nothing malformed or unbounded reaches the store."""
        timezone = snapshot.projects[project_id].timezone
        if view == "/recent":
            return AnalyticsRecent(project_id, limit(params), decode_cursor(params.get("cursor")))
        if view == "/statistics":
            days = window(params, timezone, self._now(), names=("start", "end"), dates_only=True)
            return AnalyticsDaily(project_id, days)
        return AnalyticsSummary(project_id, window(params, timezone, self._now()), self._comparison)


def _call_query(project_id: str, call_sid: str) -> AnalyticsCall:
    if not _CALL_KEY.fullmatch(call_sid):
        raise InvalidParameter(
            "callSid", "expected a CallSid (CA and 32 hex digits) or vapi:<Vapi call id>"
        )
    return AnalyticsCall(project_id, call_sid)


def _retry_later(status: int, message: str, retry_after_s: int) -> Response:
    return Response(status, {"error": message}, [(b"retry-after", str(retry_after_s).encode())])
