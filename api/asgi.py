"""The few ASGI types and responses the API needs (raw ASGI: no framework)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_encoder = msgspec.json.Encoder()


async def send_json(send: Send, status: int, body: object) -> None:
    payload = _encoder.encode(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def send_error(send: Send, status: int, message: str) -> None:
    await send_json(send, status, {"error": message})
