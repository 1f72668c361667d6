"""The few ASGI types, request reading and JSON responses the API needs (raw ASGI)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import msgspec

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY_BYTES = 1 << 20  # a project with long instructions and many tools fits easily

_encoder = msgspec.json.Encoder()


class BodyTooLarge(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, list[str]]
    body: bytes = b""
    query_string: str = ""  # as sent: signatures are computed over it

    def bearer_token(self) -> str | None:
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: object  # encoded as JSON, unless it is bytes with another content type
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    content_type: bytes = b"application/json"


def error(status: int, message: str, **extra: object) -> Response:
    return Response(status, {"error": message, **extra})


async def read_request(
    scope: Scope, receive: Receive, *, max_body_bytes: int = MAX_BODY_BYTES
) -> Request:
    """The whole request; ``BodyTooLarge`` past ``max_body_bytes`` (refused from the
    declared length before reading, when there is one, else as soon as the chunks read
    pass it).

    ``path`` is the ASGI scope's as it is: the server has already percent-decoded it
    once (``%2B`` is ``+``). Decoding it again would make ``%252D`` mean ``-``, a second
    spelling of every path that a check on the raw path would not see."""
    for name, value in scope["headers"]:
        if name.lower() == b"content-length" and value.isdigit() and int(value) > max_body_bytes:
            raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_body_bytes:
            raise BodyTooLarge
        chunks.append(chunk)
        more = message.get("more_body", False)
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    return Request(
        method=scope["method"],
        path=scope["path"],
        headers=headers,
        query=parse_qs(scope.get("query_string", b"").decode("latin-1")),
        body=b"".join(chunks),
        query_string=scope.get("query_string", b"").decode("latin-1"),
    )


async def send_response(send: Send, response: Response) -> None:
    if response.status == 204:
        payload = b""
    elif isinstance(response.body, bytes) and response.content_type != b"application/json":
        payload = response.body
    else:
        payload = _encoder.encode(response.body)
    headers = [
        (b"content-type", response.content_type),
        (b"content-length", str(len(payload)).encode()),
        (b"cache-control", b"no-store"),
        *response.headers,
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
