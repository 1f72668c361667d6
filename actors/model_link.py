"""Opening a socket to the Realtime model (OpenAI, or the simulated model).

One place for the handshake, so the early sessions opened at webhook time and the call
actor's own connections (first, reconnect, renewal) are the same kind of socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from engine.ws import HandshakeFailed, WebSocket, WebSocketClosed, connect

if TYPE_CHECKING:
    from engine.ws import OpenStream

SEND_TIMEOUT_S = 5.0
MAX_MODEL_MESSAGE_BYTES = 16 << 20
# What a failed connection attempt raises: the model is down or refuses us (OSError, TLS
# errors included), answers something that is not an upgrade (HandshakeFailed), resets or
# drops the connection mid-handshake (trio wraps the reset: BrokenResourceError), or is
# silent (TooSlowError). Each ends that call politely; none is a crash.
CONNECT_ERRORS = (
    OSError,
    HandshakeFailed,
    WebSocketClosed,
    trio.TooSlowError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
)


@dataclass(frozen=True, slots=True)
class ModelEndpoint:
    url: str  # ws(s)://.../v1/realtime
    model: str
    api_key: str
    connect_timeout_s: float = 10.0
    open_stream: OpenStream | None = None  # None: TCP (tests pass in-memory transports)


async def open_model_socket(endpoint: ModelEndpoint) -> WebSocket:
    """The upgraded socket, or ``HandshakeFailed`` / ``OSError`` / ``trio.TooSlowError``
    (no answer within ``connect_timeout_s``)."""
    return await connect(
        f"{endpoint.url}?model={endpoint.model}",
        headers=[("Authorization", f"Bearer {endpoint.api_key}")],
        max_message_bytes=MAX_MODEL_MESSAGE_BYTES,
        send_timeout_s=SEND_TIMEOUT_S,
        connect_timeout_s=endpoint.connect_timeout_s,
        open_stream=endpoint.open_stream,
    )
