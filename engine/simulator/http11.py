"""The few HTTP/1.1 server steps the simulated REST APIs share (Twilio's, Vapi's), on
h11 over a Trio stream: read a request's head and its bounded body, answer JSON."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import h11
import trio

READ_BYTES = 16 * 1024
IDLE_TIMEOUT_S = 10.0  # an idle kept-alive connection is closed after this
SEND_TIMEOUT_S = 5.0
_REASONS = {200: b"OK", 201: b"Created", 400: b"Bad Request", 401: b"Unauthorized"}
_REASONS |= {404: b"Not Found", 405: b"Method Not Allowed", 413: b"Payload Too Large"}
_REASONS |= {500: b"Internal Server Error", 503: b"Service Unavailable"}


async def next_event(stream: trio.abc.Stream, connection: h11.Connection) -> h11.Event | None:
    """The next h11 event; ``None`` once the peer is gone (or paused between cycles)."""
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(bytes(await stream.receive_some(READ_BYTES)))
            continue
        if event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
            return None
        return event  # type: ignore[return-value]


async def read_body(
    stream: trio.abc.Stream, connection: h11.Connection, max_bytes: int
) -> bytes | None:
    """The request body; ``None`` past ``max_bytes`` (the rest is not read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await next_event(stream, connection)
        if isinstance(event, h11.Data):
            size += len(event.data)
            if size > max_bytes:
                return None
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return b"".join(chunks)
        else:
            raise h11.RemoteProtocolError("the request ended before its body")


async def send_json(
    stream: trio.abc.Stream,
    connection: h11.Connection,
    status: int,
    body: Any,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    payload = json.dumps(body).encode()
    head = [
        (b"Content-Type", b"application/json; charset=utf-8"),
        (b"Content-Length", str(len(payload)).encode()),
        *(headers or []),
    ]
    if connection.their_state is not h11.DONE:  # the body was not read whole: close after
        head.append((b"Connection", b"close"))
    response = h11.Response(status_code=status, headers=head, reason=_REASONS.get(status, b""))
    with trio.fail_after(SEND_TIMEOUT_S):
        data = connection.send(response) or b""
        data += connection.send(h11.Data(data=payload)) or b""
        data += connection.send(h11.EndOfMessage()) or b""
        await stream.send_all(data)


Exchange = Callable[[trio.SocketStream, h11.Connection], Awaitable[bool]]


async def serve_connection(stream: trio.SocketStream, exchange: Exchange, name: str) -> None:
    """One kept-alive HTTP/1.1 connection of a simulated service: ``exchange`` answers
    one request (False: the connection is done); a broken or malformed one is dropped
    and logged at debug (a simulator's peer misbehaving is not the engine's error)."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=READ_BYTES)
    async with stream:
        try:
            while await exchange(stream, connection):
                connection.start_next_cycle()
        except (h11.ProtocolError, trio.BrokenResourceError, trio.TooSlowError) as exc:
            logging.getLogger("afterhours.simulator").debug("%s: connection dropped: %s", name, exc)


async def next_request(stream: trio.SocketStream, connection: h11.Connection) -> h11.Request | None:
    """The next request, or None: the peer closed, or stayed idle past IDLE_TIMEOUT_S."""
    event: h11.Event | None = None
    with trio.move_on_after(IDLE_TIMEOUT_S):
        event = await next_event(stream, connection)
    return event if isinstance(event, h11.Request) else None
