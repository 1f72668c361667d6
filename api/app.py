"""The HTTP API as a raw ASGI application.

Routes: ``GET /health`` and ``GET /health/detailed`` (no auth: for load balancers and
probes; no secrets), ``GET /metrics`` and ``GET /stats`` (admin token; see
api/observability.py), ``/admin/*`` (admin token; see api/admin.py), ``/twilio/*``
(Twilio's signature) and ``/vapi/events`` (Vapi's secret; api/vapi_events.py).
Unknown paths get a JSON 404, known paths with another method a 405. An exception in a
handler answers 500 with a request id (also in the log and the ``apiError`` alert), and
the server goes on. The lifespan protocol is answered (Hypercorn's trio worker crashes at
start-up on an app that ignores it: docs/stack-measurements.md 2).
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

from api.analytics import ROUTES as ANALYTICS_ROUTES
from api.asgi import (
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
from api.dashboard import dashboard
from api.openapi import document
from api.twilio_webhooks import ROUTES as TWILIO_ROUTES
from api.vapi_events import MAX_BODY_BYTES as VAPI_MAX_BODY_BYTES
from api.vapi_events import PATH as VAPI_PATH
from api.vapi_events import ROUTES as VAPI_ROUTES
from engine.config import AlertLevel
from engine.messages import Alert
from engine.twilio_form import MAX_BODY_BYTES as TWILIO_MAX_BODY_BYTES

if TYPE_CHECKING:
    from api.admin import AdminApi
    from api.analytics import AnalyticsApi
    from api.health import HealthView
    from api.observability import Observability
    from api.twilio_webhooks import TwilioWebhooks
    from api.vapi_events import VapiEvents
    from engine.mailbox import Outbox

# Request counts by route group, so the label set stays bounded whatever the paths.
OPENAPI = document()
_TWILIO_PATHS = {path for _, path in TWILIO_ROUTES}
_ROUTE_GROUPS = (
    "/health", "/metrics", "/stats", "/admin", "/analytics", "/twilio", "/vapi", "/dashboard",
)  # fmt: skip

log = logging.getLogger("afterhours.api")


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
    ) -> None:
        self._vapi = vapi
        self._health = health
        self._admin = admin
        self._twilio = twilio
        self._observability = observability
        self._alerts = alerts
        self._analytics = analytics
        self._requests: dict[tuple[str, int], int] = {}

    def request_counts(self) -> dict[tuple[str, int], int]:
        return dict(self._requests)

    def routes(self) -> set[tuple[str, str]]:
        """(METHOD, path template) of every route served, as /openapi.json lists them."""
        served = {("GET", "/health"), ("GET", "/openapi.json"), ("GET", "/dashboard")}
        if self._observability is not None:
            served |= {("GET", "/health/detailed"), ("GET", "/metrics"), ("GET", "/stats")}
        if self._analytics is not None:
            served |= ANALYTICS_ROUTES
        if self._twilio is not None:
            served |= TWILIO_ROUTES
        if self._admin is not None:
            served |= self._admin.route_templates()
        if self._vapi is not None:
            served |= VAPI_ROUTES
        return served

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http":
            twilio = self._twilio if scope["path"] in _TWILIO_PATHS else None
            vapi = self._vapi if scope["path"] == VAPI_PATH else None
            # Twilio's webhooks have a tighter limit than the API's (engine/twilio_form.py);
            # Vapi's end-of-call reports a looser one (api/vapi_events.py).
            limit = MAX_BODY_BYTES if twilio is None else TWILIO_MAX_BODY_BYTES
            limit = VAPI_MAX_BODY_BYTES if vapi is not None else limit
            try:
                request = await read_request(scope, receive, max_body_bytes=limit)
            except BodyTooLarge:
                too_large = error(413, "request body too large")
                if twilio is not None:
                    too_large = twilio.body_too_large(scope["path"])
                elif vapi is not None:
                    too_large = vapi.body_too_large()
                await send_response(send, too_large)
                return
            response = await self._answer(request)
            group = next((g for g in _ROUTE_GROUPS if request.path.startswith(g)), "other")
            self._requests[(group, response.status)] = (
                self._requests.get((group, response.status), 0) + 1
            )
            await send_response(send, response)
        else:
            # No WebSocket route yet: refuse the upgrade (ASGI: close before accept = 403).
            await send({"type": "websocket.close", "code": 1008})

    async def _answer(self, request: Request) -> Response:
        try:
            return await self._route(request)
        except Exception as exc:
            request_id = secrets.token_hex(8)
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

    async def _route(self, request: Request) -> Response:
        if request.path == "/health":
            if request.method not in ("GET", "HEAD"):
                return error(405, f"{request.method} not allowed on /health; use GET")
            return Response(self._health.http_status, self._health.body())
        if request.path == "/dashboard":
            if request.method not in ("GET", "HEAD"):
                return error(405, f"{request.method} not allowed on /dashboard; use GET")
            return dashboard()
        if request.path == "/openapi.json":
            if request.method not in ("GET", "HEAD"):
                return error(405, f"{request.method} not allowed on /openapi.json; use GET")
            return Response(200, OPENAPI)
        observed = self._observability
        if observed is not None and request.path in ("/health/detailed", "/metrics", "/stats"):
            if request.method not in ("GET", "HEAD"):
                return error(405, f"{request.method} not allowed on {request.path}; use GET")
            if request.path == "/health/detailed":
                # Open to probes; the error texts (hosts, ports, database) to the admin only.
                admin = self._admin is not None and self._admin.authorized(request)
                return await observed.detailed_health(details=admin)
            if self._admin is None or not self._admin.authorized(request):
                return Response(
                    401,
                    {"error": "missing or wrong admin token (Authorization: Bearer <ADMIN_TOKEN>)"},
                    [(b"www-authenticate", b'Bearer realm="afterhours-admin"')],
                )
            return observed.metrics() if request.path == "/metrics" else observed.stats()
        if request.path.startswith("/analytics/") and self._analytics is not None:
            return await self._analytics.handle(request)
        if request.path.startswith("/admin/") and self._admin is not None:
            return await self._admin.handle(request)
        if request.path == VAPI_PATH and self._vapi is not None:
            return await self._vapi.handle(request)
        if request.path.startswith("/twilio/") and self._twilio is not None:
            answer = await self._twilio.handle(request)
            if answer is not None:
                return answer
        return error(404, f"no route for {request.path}")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
