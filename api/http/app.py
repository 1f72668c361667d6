"""The HTTP API as a raw ASGI application.

Routes: ``GET /health`` and ``GET /health/detailed`` (no auth: for load balancers and
probes; no secrets), ``GET /metrics`` (the admin token or ``METRICS_TOKEN``, which opens
nothing else) and ``GET /stats`` (admin token; see api/http/observability.py), ``/admin/*``
(admin token; see api/http/admin.py), ``/twilio/*`` (Twilio's signature) and ``/vapi/events``
(Vapi's secret; api/http/vapi_events.py).
Every path is one row of the route table (``App.mounts``: path, handler, body limit,
request-count label, the operations it serves), from which dispatch, the body limits,
the request counts and ``routes()`` (checked against /openapi.json) all come. Unknown
paths get a JSON 404, known paths with another method a 405. An exception in a
handler answers 500 with a request id (also in the log and the ``apiError`` alert), and
the server goes on.

Every HTTP request is logged once it is answered, on ``afterhours.access`` (INFO): method,
path, status, latency and a request id, which is the client's ``X-Request-Id`` when it is
a sane one (else generated) and is echoed in the response's ``X-Request-Id``. The query
string is never logged (Twilio's URLs and clients' ``?token=`` may carry secrets: only its
length is), nor any header. The media stream is not served here: no line per frame.

The lifespan protocol is answered (Hypercorn's trio worker crashes at start-up on an app
that ignores it: docs/stack-measurements.md 2).
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from api.http.analytics import ROUTES as ANALYTICS_ROUTES
from api.http.asgi import (
    MAX_BODY_BYTES,
    BodyTooLarge,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    error,
    read_request,
    send_response,
)
from api.http.dashboard import dashboard
from api.http.openapi import document
from api.http.token_auth import bearer_matches, unauthorized
from api.http.twilio_webhooks import ROUTES as TWILIO_ROUTES
from api.http.vapi_events import MAX_BODY_BYTES as VAPI_MAX_BODY_BYTES
from api.http.vapi_events import PATH as VAPI_PATH
from api.http.vapi_events import ROUTES as VAPI_ROUTES
from engine.alert_level import AlertLevel
from engine.messages import Alert
from engine.twilio_form import MAX_BODY_BYTES as TWILIO_MAX_BODY_BYTES

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from api.http.admin import AdminApi
    from api.http.analytics import AnalyticsApi
    from api.http.health import HealthView
    from api.http.observability import Observability
    from api.http.twilio_webhooks import TwilioWebhooks
    from api.http.vapi_events import VapiEvents
    from engine.config import Secret
    from engine.mailbox import Outbox

OPENAPI = document()
# Request counts by route group, so the label set stays bounded whatever the paths; every
# mount names its group from here (a test checks), "other" counts what no route serves.
_ROUTE_GROUPS = (
    "/health", "/metrics", "/stats", "/admin", "/analytics", "/twilio", "/vapi", "/dashboard",
)  # fmt: skip
ROUTE_GROUPS = (*_ROUTE_GROUPS, "other")  # every value of http_requests_total's route


@dataclass(frozen=True, slots=True)
class Mount:
    """One row of the route table: a path (exact, or a prefix when it ends in ``/``) and
    the handler that answers it. A handler that returns None has no route there (404)."""

    path: str
    group: str  # http_requests_total's route label
    handle: Callable[[Request], Awaitable[Response | None]]
    templates: frozenset[tuple[str, str]]  # (METHOD, template) served, for /openapi.json
    max_body_bytes: int = MAX_BODY_BYTES
    too_large: Callable[[str], Response] | None = None  # the answer to a body over it
    get_only: bool = False  # any other method: 405

    def matches(self, path: str) -> bool:
        return path.startswith(self.path) if self.path.endswith("/") else path == self.path


log = logging.getLogger("afterhours.api")
access_log = logging.getLogger("afterhours.access")
# A client's X-Request-Id is kept when it is this tame (a UUID, a proxy's hex id); anything
# else would let a client write what it likes into the log and our response header.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
MAX_LOGGED_PATH_CHARS = 256  # a path is a stranger's text: a bounded part of the line


class App:
    def __init__(
        self,
        health: HealthView,
        admin: AdminApi | None = None,
        twilio: TwilioWebhooks | None = None,
        observability: Observability | None = None,
        alerts: Outbox[Alert] | None = None,
        analytics: AnalyticsApi | None = None,
        vapi: VapiEvents | None = None,
        *,
        metrics_token: Secret | None = None,
    ) -> None:
        self._vapi = vapi
        self._metrics_token = metrics_token.reveal().encode() if metrics_token else None
        self._health = health
        self._admin = admin
        self._twilio = twilio
        self._observability = observability
        self._alerts = alerts
        self._analytics = analytics
        self._requests: dict[tuple[str, int], int] = {}
        self.mounts = self._mounts()

    def _mounts(self) -> tuple[Mount, ...]:
        """The route table: every path this app answers, with its handler; first match
        wins. Only the handlers this app was given are mounted."""

        def get(path: str) -> frozenset[tuple[str, str]]:
            return frozenset({("GET", path)})

        mounts = [
            Mount("/health", "/health", self._health_page, get("/health"), get_only=True),
            Mount("/dashboard", "/dashboard", _dashboard, get("/dashboard"), get_only=True),
            Mount("/openapi.json", "other", _openapi, get("/openapi.json"), get_only=True),
        ]
        if self._observability is not None:
            for path, group, handle in (
                ("/health/detailed", "/health", self._detailed_health),
                ("/metrics", "/metrics", self._metrics),
                ("/stats", "/stats", self._stats),
            ):
                mounts.append(Mount(path, group, handle, get(path), get_only=True))
        if self._analytics is not None:
            mounts.append(
                Mount(
                    "/analytics/", "/analytics", self._analytics.handle, frozenset(ANALYTICS_ROUTES)
                )
            )
        if self._admin is not None:
            routes = frozenset(self._admin.route_templates())
            mounts.append(Mount("/admin/", "/admin", self._admin.handle, routes))
        if self._vapi is not None:
            vapi = self._vapi
            mounts.append(
                Mount(
                    VAPI_PATH,
                    "/vapi",
                    vapi.handle,
                    frozenset(VAPI_ROUTES),
                    max_body_bytes=VAPI_MAX_BODY_BYTES,  # end-of-call reports are larger
                    too_large=lambda _path: vapi.body_too_large(),
                )
            )
        if self._twilio is not None:
            # Twilio's webhooks have a tighter limit than the API's (engine/twilio_form.py),
            # on their own paths only: another /twilio/ path is a 404, not a refused webhook.
            twilio = self._twilio
            for method, path in sorted(TWILIO_ROUTES):
                mounts.append(
                    Mount(
                        path,
                        "/twilio",
                        twilio.handle,
                        frozenset({(method, path)}),
                        max_body_bytes=TWILIO_MAX_BODY_BYTES,
                        too_large=twilio.body_too_large,
                    )
                )
        return tuple(mounts)

    def request_counts(self) -> dict[tuple[str, int], int]:
        return dict(self._requests)

    def routes(self) -> set[tuple[str, str]]:
        """(METHOD, path template) of every route served, as /openapi.json lists them."""
        return {route for mount in self.mounts for route in mount.templates}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        else:
            # No WebSocket route yet: refuse the upgrade (ASGI: close before accept = 403).
            await send({"type": "websocket.close", "code": 1008})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        began_s = time.perf_counter()
        request_id = _request_id(scope)
        status = 0  # stays 0 if the request was cancelled before it had an answer
        try:
            response = await self._response(scope, receive, request_id)
            status = response.status
            echo = (b"x-request-id", request_id.encode())
            await send_response(send, _with_header(response, echo))
        finally:
            # One line per request, also when the client left or the answer failed.
            query_chars = len(scope.get("query_string", b""))
            access_log.info(
                "%s %s%s %d %.1fms id=%s",
                scope.get("method", "-"),
                scope["path"][:MAX_LOGGED_PATH_CHARS],
                f" (query: {query_chars} chars)" if query_chars else "",
                status,
                (time.perf_counter() - began_s) * 1000,
                request_id,
            )

    async def _response(self, scope: Scope, receive: Receive, request_id: str) -> Response:
        path = scope["path"]
        mount = next((m for m in self.mounts if m.matches(path)), None)
        limit = MAX_BODY_BYTES if mount is None else mount.max_body_bytes
        try:
            request = await read_request(scope, receive, max_body_bytes=limit)
        except BodyTooLarge:
            if mount is not None and mount.too_large is not None:
                return mount.too_large(path)
            return error(413, "request body too large")
        response = await self._answer(mount, request, request_id)
        # What no route serves is counted under its path's group (a 404 on /admin stays
        # an /admin 404); "other" is what no group names.
        group = mount.group if mount is not None else _group_of(path)
        self._requests[(group, response.status)] = (
            self._requests.get((group, response.status), 0) + 1
        )
        return response

    async def _answer(self, mount: Mount | None, request: Request, request_id: str) -> Response:
        try:
            answer = None
            if mount is not None and mount.get_only and request.method not in ("GET", "HEAD"):
                answer = error(405, f"{request.method} not allowed on {request.path}; use GET")
            elif mount is not None:
                answer = await mount.handle(request)
            return answer or error(404, f"no route for {request.path}")
        except Exception as exc:
            log.exception("request %s (%s %s) failed", request_id, request.method, request.path)
            if self._alerts is not None:
                self._alerts.send_nowait(
                    Alert(
                        AlertLevel.ERROR,
                        "apiError",
                        "HTTP handler failed",
                        f"{request.method} {request.path}: {type(exc).__name__} "
                        f"(request {request_id})",
                        metadata={"requestId": request_id, "path": request.path},
                    )
                )
            return error(500, f"internal error; request id {request_id}", requestId=request_id)

    async def _health_page(self, request: Request) -> Response:
        return Response(self._health.http_status, self._health.body())

    def _observed(self) -> Observability:
        assert self._observability is not None  # its routes are mounted only with it
        return self._observability

    def _is_admin(self, request: Request) -> bool:
        return self._admin is not None and self._admin.authorized(request)

    async def _detailed_health(self, request: Request) -> Response:
        # Open to probes; the error texts (hosts, ports, database) to the admin only.
        return await self._observed().detailed_health(details=self._is_admin(request))

    async def _metrics(self, request: Request) -> Response:
        if self._is_admin(request) or bearer_matches(request, self._metrics_token):
            return self._observed().metrics()
        return unauthorized(
            "missing or wrong token (Authorization: Bearer <ADMIN_TOKEN or METRICS_TOKEN>)"
        )

    async def _stats(self, request: Request) -> Response:
        if self._is_admin(request):
            return self._observed().stats()
        return unauthorized("missing or wrong token (Authorization: Bearer <ADMIN_TOKEN>)")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def _group_of(path: str) -> str:
    return next((group for group in _ROUTE_GROUPS if path.startswith(group)), "other")


async def _dashboard(request: Request) -> Response:
    return dashboard()


async def _openapi(request: Request) -> Response:
    return Response(200, OPENAPI)


def _request_id(scope: Scope) -> str:
    """The client's ``X-Request-Id`` if it is a tame one, else a new random one."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"x-request-id":
            sent: str = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(sent):
                return sent
            break
    return secrets.token_hex(8)


def _with_header(response: Response, header: tuple[bytes, bytes]) -> Response:
    return Response(response.status, response.body, [*response.headers, header],
                    response.content_type)  # fmt: skip
