"""The HTTP API as a raw ASGI application.

Routes: ``GET /health`` (no auth: for load balancers) and ``/admin/*`` (admin token; see
api/admin.py). Unknown paths get a JSON 404, known paths with another method a 405 with
``Allow``. The lifespan protocol is answered (Hypercorn's trio worker crashes at start-up
on an app that ignores it: stack-notes section 2).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from api.asgi import (
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

if TYPE_CHECKING:
    from api.admin import AdminApi
    from api.health import HealthView
    from api.twilio_webhooks import TwilioWebhooks

log = logging.getLogger("afterhours.api")


class App:
    def __init__(
        self,
        health: HealthView,
        admin: AdminApi | None = None,
        twilio: TwilioWebhooks | None = None,
    ) -> None:
        self._health = health
        self._admin = admin
        self._twilio = twilio

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http":
            try:
                request = await read_request(scope, receive)
            except BodyTooLarge:
                await send_response(send, error(413, "request body too large"))
                return
            await send_response(send, await self._route(request))
        else:
            # No WebSocket route yet: refuse the upgrade (ASGI: close before accept = 403).
            await send({"type": "websocket.close", "code": 1008})

    async def _route(self, request: Request) -> Response:
        if request.path == "/health":
            if request.method not in ("GET", "HEAD"):
                return error(405, f"{request.method} not allowed on /health; use GET")
            return Response(self._health.http_status, self._health.body())
        if request.path.startswith("/admin/") and self._admin is not None:
            return await self._admin.handle(request)
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
