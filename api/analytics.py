"""The analytics API: what each business's calls looked like.

    GET /analytics/project/{projectId}?from=&to=                  summary of a window
    GET /analytics/project/{projectId}/recent?limit=&cursor=      latest calls, paged
    GET /analytics/project/{projectId}/statistics?start=&end=     per local day

Access: ``Authorization: Bearer <key>``. A project's API key reads that project only;
``ADMIN_TOKEN`` reads every project. No token, an unknown or a revoked key: 401. A key
for another project: 403, whether or not the asked project exists (a key never learns
which projects exist). Bad parameters: 400 naming the parameter; an unknown project (for
the admin token): 404. The key check, the project's time zone and the query run as one
unit on the store's query lane.
"""

from __future__ import annotations

import hmac
import re
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from actors.store import analytics
from actors.store.admin import NotFound, project_for_key
from actors.store.queries import StoreUnavailable, ask_store
from api.asgi import Response, error
from engine.analytics_params import (
    Cursor,
    InvalidParameter,
    decode_cursor,
    encode_cursor,
    limit,
    window,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors.store.db import Connection
    from actors.store.queries import StoreQuery
    from api.asgi import Request
    from engine.config import Secret
    from engine.mailbox import Outbox

ANALYTICS_TIMEOUT_S = 10.0
_ROUTE = re.compile(r"/analytics/project/(?P<id>[^/]+)(?P<view>/recent|/statistics)?")
ROUTES = {
    ("GET", "/analytics/project/{projectId}"),
    ("GET", "/analytics/project/{projectId}/recent"),
    ("GET", "/analytics/project/{projectId}/statistics"),
}


class Forbidden(Exception):
    pass


class Unauthorized(Exception):
    pass


class AnalyticsApi:
    def __init__(
        self,
        queries: Outbox[StoreQuery],
        admin_token: Secret | None,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        comparison_rate_per_min_usd: float | None = None,
    ) -> None:
        self._queries = queries
        self._comparison = comparison_rate_per_min_usd
        self._admin_token = admin_token.reveal().encode() if admin_token else None
        self._now = now

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
            return _unauthorized("missing API key (Authorization: Bearer <key>)")
        admin = self._admin_token is not None and hmac.compare_digest(
            token.encode(), self._admin_token
        )
        params = {key: values[-1] for key, values in request.query.items() if values[-1]}
        work = partial(
            self._read,
            project_id=found["id"],
            view=found["view"] or "",
            params=params,
            key=None if admin else token,
            now=self._now(),
            comparison=self._comparison,
        )
        try:
            body = await ask_store(self._queries, work, timeout_s=ANALYTICS_TIMEOUT_S)
        except Unauthorized as exc:
            return _unauthorized(str(exc))
        except Forbidden as exc:
            return error(403, str(exc))
        except NotFound as exc:
            return error(404, str(exc))
        except InvalidParameter as exc:
            return error(400, str(exc), field=exc.field)
        except StoreUnavailable as exc:
            return error(503, f"database unavailable: {exc}; try again")
        return Response(200, body)

    @staticmethod
    async def _read(
        connection: Connection,
        *,
        project_id: str,
        view: str,
        params: dict[str, str],
        key: str | None,
        now: datetime,
        comparison: float | None,
    ) -> dict[str, Any]:
        if key is not None:
            readable = await project_for_key(connection, key)
            if readable is None:
                raise Unauthorized("unknown or revoked API key")
            if readable != project_id:
                raise Forbidden("this API key reads another project")
        timezone = await analytics.project_timezone(connection, project_id)
        if view == "/recent":
            cursor = decode_cursor(params.get("cursor"))
            calls, following = await analytics.recent(connection, project_id, limit(params), cursor)
            next_cursor = encode_cursor(Cursor(*following)) if following else None
            return {"projectId": project_id, "calls": calls, "nextCursor": next_cursor}
        if view == "/statistics":
            days = window(params, timezone, now, names=("start", "end"), dates_only=True)
            return await analytics.daily(connection, project_id, days)
        days = window(params, timezone, now)
        return await analytics.summary(connection, project_id, days, comparison)


def _unauthorized(message: str) -> Response:
    return Response(401, {"error": message}, [(b"www-authenticate", b'Bearer realm="afterhours"')])
