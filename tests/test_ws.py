"""The Sans-I/O WebSocket layer over real sockets on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from engine.ws import (
    HandshakeFailed,
    Rejection,
    WebSocket,
    WebSocketClosed,
    accept,
    connect,
)

LIMIT = 64 * 1024


@asynccontextmanager
async def server(
    handler: Callable[[WebSocket], object], check: Callable[..., Rejection | None] = lambda r: None
) -> AsyncIterator[tuple[str, list[BaseException]]]:
    errors: list[BaseException] = []

    async def serve_one(stream: trio.SocketStream) -> None:
        async with stream:
            await serve_stream(stream)

    async def serve_stream(stream: trio.SocketStream) -> None:
        try:
            socket, _ = await accept(
                stream, check=check, max_message_bytes=LIMIT, send_timeout_s=5,
                handshake_timeout_s=5,
            )  # fmt: skip
            await handler(socket)  # type: ignore[misc]
        except (HandshakeFailed, WebSocketClosed) as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve_one, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield f"ws://127.0.0.1:{port}/media?x=1", errors
        nursery.cancel_scope.cancel()


async def client(url: str, headers: list[tuple[str, str]] | None = None) -> WebSocket:
    return await connect(
        url, headers=headers or [], max_message_bytes=LIMIT, send_timeout_s=5, connect_timeout_s=5
    )


async def echo(socket: WebSocket) -> None:
    while True:
        for message in await socket.receive_batch():
            assert isinstance(message, str)
            await socket.send_text(message.encode())


async def receive_n(socket: WebSocket, count: int) -> list[str | bytes]:
    received: list[str | bytes] = []
    while len(received) < count:
        received += await socket.receive_batch()
    return received


async def test_messages_go_both_ways() -> None:
    with trio.fail_after(10):
        async with server(echo) as (url, _):
            socket = await client(url)
            for n in range(50):
                await socket.send_text(f'{{"n":{n}}}'.encode())
            assert await receive_n(socket, 50) == [f'{{"n":{n}}}' for n in range(50)]
            await socket.aclose()


async def test_a_fragmented_message_is_reassembled() -> None:
    received: list[str | bytes] = []

    async def collect(socket: WebSocket) -> None:
        received.extend(await socket.receive_batch())

    with trio.fail_after(10):
        async with server(collect) as (url, _):
            socket = await client(url)
            socket._protocol.send_text(b'{"part":', fin=False)
            socket._protocol.send_continuation(b'"one"}', fin=True)
            await socket._flush()
            with pytest.raises(WebSocketClosed):
                await socket.receive_batch()  # the server closed after its one read
            await socket.aclose()
    assert received == ['{"part":"one"}']


async def test_the_check_can_refuse_the_upgrade_with_the_request_in_hand() -> None:
    seen: list[str] = []

    def check(request: object) -> Rejection | None:
        seen.append(request.headers.get("X-Twilio-Signature", ""))  # type: ignore[attr-defined]
        return Rejection(403, "bad signature")

    with trio.fail_after(10):
        async with server(echo, check) as (url, errors):
            with pytest.raises(HandshakeFailed, match="403"):
                await client(url, [("X-Twilio-Signature", "nope")])
            await trio.testing.wait_all_tasks_blocked()
    assert seen == ["nope"]
    assert isinstance(errors[0], HandshakeFailed)


async def test_a_close_from_the_peer_is_seen_with_its_code() -> None:
    with trio.fail_after(10):
        async with server(echo) as (url, errors):
            socket = await client(url)
            await socket.aclose(1000, "caller hung up")
            await trio.testing.wait_all_tasks_blocked()
    assert isinstance(errors[0], WebSocketClosed)
    assert errors[0].code == 1000


async def test_an_oversized_message_closes_with_1009() -> None:
    with trio.fail_after(10):
        async with server(echo) as (url, errors):
            socket = await client(url)
            await socket.send_text(b'"' + b"x" * (LIMIT + 10) + b'"')
            with pytest.raises(WebSocketClosed) as closed:
                await socket.receive_batch()
            await socket.aclose()
            await trio.testing.wait_all_tasks_blocked()
    assert closed.value.code == 1009
    assert isinstance(errors[0], WebSocketClosed)


async def test_a_peer_that_stops_reading_trips_the_send_deadline() -> None:
    async def never_read(socket: WebSocket) -> None:
        await trio.sleep_forever()

    with trio.fail_after(20):
        async with server(never_read) as (url, _):
            socket = await connect(
                url, headers=[], max_message_bytes=LIMIT, send_timeout_s=0.5, connect_timeout_s=5
            )
            with pytest.raises(trio.TooSlowError):  # noqa: PT012 - fills the buffers first
                for _ in range(10_000):
                    await socket.send_text(b'"' + b"y" * 60_000 + b'"')
            await socket.aclose()
