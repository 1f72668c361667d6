"""The HTTP API as a raw ASGI application.

Routes come from the issues that need them; today: ``GET /health``. Unknown paths get a
JSON 404, known paths with another method a 405 with ``Allow``. The lifespan protocol is
answered (Hypercorn's trio worker crashes at start-up on an app that ignores it:
stack-notes section 2).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from api.asgi import Receive, Scope, Send, send_error, send_json

if TYPE_CHECKING:
    from api.health import HealthView

log = logging.getLogger("afterhours.api")


class App:
    def __init__(self, health: HealthView) -> None:
        self._health = health

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http":
            await self._http(scope, send)
        else:
            # No WebSocket route yet: refuse the upgrade (ASGI: close before accept = 403).
            await send({"type": "websocket.close", "code": 1008})

    async def _http(self, scope: Scope, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path == "/health":
            if method not in ("GET", "HEAD"):
                await send_error(send, 405, f"{method} not allowed on {path}; use GET")
                return
            await send_json(send, 200, self._health.body())
            return
        await send_error(send, 404, f"no route for {path}")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
