"""The Sans-I/O WebSocket layer over real sockets on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from engine.ws import (
    CLOSE_TIMEOUT_S,
    MAX_BYTES_AFTER_CLOSE,
    READ_BYTES,
    ControlBudget,
    HandshakeFailed,
    PeerNotReading,
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


# -- what a peer that sends without reading can make us hold ---------------------------


async def memory_pair(
    **options: Any,
) -> tuple[WebSocket, trio.StapledStream[Any, Any], ClientProtocol]:
    """A server ``WebSocket`` (``accept``, with ``options``) on an in-memory stream, and
    a bare websockets client protocol on the other end: the test writes its frames and
    sees every frame the server sent, pongs included."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    client = ClientProtocol(parse_uri("ws://test.example/media"))
    client.send_request(client.connect())
    await client_stream.send_all(b"".join(client.data_to_send()))
    server, _ = await accept(
        server_stream, check=lambda r: None, max_message_bytes=LIMIT, send_timeout_s=5,
        handshake_timeout_s=5, **options,
    )  # fmt: skip
    client.receive_data(await client_stream.receive_some())
    assert isinstance(client.events_received()[0], Response)  # the 101
    return server, client_stream, client


async def send_frames(stream: trio.abc.Stream, client: ClientProtocol) -> None:
    await stream.send_all(b"".join(client.data_to_send()))


async def test_a_read_full_of_pings_gets_one_pong_to_the_latest_ping() -> None:
    server, stream, client = await memory_pair()
    for n in range(1000):
        client.send_ping(str(n).encode())
    client.send_text(b'"after the pings"')
    await send_frames(stream, client)  # one write, one read at the server
    assert await server.receive_batch() == ['"after the pings"']
    client.receive_data(await stream.receive_some())
    pongs = [e for e in client.events_received() if isinstance(e, Frame)]
    # RFC 6455 5.5.3: answering only the most recent ping is allowed.
    assert [(p.opcode, bytes(p.data)) for p in pongs] == [(Opcode.PONG, b"999")]
    assert server.fault is None


async def test_pings_past_the_budget_close_the_connection_and_the_rest_is_not_parsed() -> None:
    budget = ControlBudget(burst=4, per_s=1.0)
    server, stream, client = await memory_pair(control_budget=budget)
    sent_bytes = server.bytes_sent  # the 101
    for _ in range(5000):
        client.send_ping(b"")
    client.send_text(b'"behind the flood"')
    await send_frames(stream, client)
    with pytest.raises(WebSocketClosed) as closed:
        await server.receive_batch()  # the message behind the flood is never delivered
    assert (closed.value.code, server.fault) == (1008, "ping_flood")
    assert server._protocol.events_received() == []  # nothing of the flood was kept
    assert (server.bytes_sent, server.unsent_bytes) == (sent_bytes, 0)  # not even a pong
    assert await stream.receive_some() == b""  # the transport is closed


async def test_the_ping_budget_refills_with_time(autojump_clock: trio.testing.MockClock) -> None:
    server, stream, client = await memory_pair(control_budget=ControlBudget(burst=2, per_s=1.0))

    async def pings_then_a_message(count: int) -> list[str | bytes]:
        for _ in range(count):
            client.send_ping(b"")
        client.send_text(b'"ok"')
        await send_frames(stream, client)
        return await server.receive_batch()

    assert await pings_then_a_message(2) == ['"ok"']  # the burst
    await trio.sleep(1.0)
    assert await pings_then_a_message(1) == ['"ok"']  # one more a second later
    with pytest.raises(WebSocketClosed):
        await pings_then_a_message(1)  # and none left right after it
    assert server.fault == "ping_flood"


async def test_a_peer_that_does_not_read_is_cut_off_at_the_unsent_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Lockstep: a write completes only when the peer reads it, and this peer reads
    # nothing after the 101. Two writers (a call has more than one) pile up behind it.
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    client = ClientProtocol(parse_uri("ws://test.example/media"))
    client.send_request(client.connect())
    first_write: list[BaseException] = []

    async def the_peer() -> None:
        await client_stream.send_all(b"".join(client.data_to_send()))
        client.receive_data(await client_stream.receive_some())  # the 101, then no more

    async def write_and_wait(server: WebSocket) -> None:
        try:
            await server.send_text(b'"' + b"a" * 600 + b'"')
        except WebSocketClosed as exc:
            first_write.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(the_peer)
        server, _ = await accept(
            server_stream, check=lambda r: None, max_message_bytes=LIMIT, send_timeout_s=60,
            handshake_timeout_s=5, max_unsent_bytes=1000,
        )  # fmt: skip
        nursery.start_soon(write_and_wait, server)
        await trio.testing.wait_all_tasks_blocked()
        assert server.unsent_bytes == 606  # the first write (4 + 602 bytes) waits
        with pytest.raises(PeerNotReading, match="606 bytes unsent"):
            await server.send_text(b'"' + b"b" * 600 + b'"')  # refused at once, not queued
        assert server.unsent_bytes == 606
        assert server.fault == "peer_not_reading"
        await server.aclose()  # no handshake with it: the waiting write sees the close
    assert len(first_write) == 1
    assert server.peak_unsent_bytes <= server.max_unsent_bytes
    assert trio.current_time() < 60  # cut off at once, not at the send deadline
    assert server.unsent_bytes == 0


async def test_a_write_past_its_deadline_marks_the_peer_not_reading_and_closing_does_not_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    client = ClientProtocol(parse_uri("ws://test.example/media"))
    client.send_request(client.connect())

    async def the_peer() -> None:
        await client_stream.send_all(b"".join(client.data_to_send()))
        client.receive_data(await client_stream.receive_some())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(the_peer)
        server, _ = await accept(
            server_stream, check=lambda r: None, max_message_bytes=LIMIT, send_timeout_s=5,
            handshake_timeout_s=5,
        )  # fmt: skip
    with pytest.raises(trio.TooSlowError):
        await server.send_text(b'"nobody reads this"')
    assert server.fault == "peer_not_reading"
    stuck_at_s = trio.current_time()
    await server.aclose()  # no close handshake with a peer that does not read
    assert trio.current_time() == stuck_at_s


async def test_closing_drops_what_the_peer_floods_and_stops_listening_after_two_reads(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server, stream, client = await memory_pair()
    for _ in range(50_000):  # 300 KB of pings and messages, and no close reply
        client.send_ping(b"")
        client.send_text(b"{}")
    await send_frames(stream, client)
    await server.aclose()
    # It read MAX_BYTES_AFTER_CLOSE, kept none of it, and did not wait out the timeout.
    assert trio.current_time() < CLOSE_TIMEOUT_S
    assert server.bytes_received <= 1024 + MAX_BYTES_AFTER_CLOSE
    assert server._protocol.events_received() == []
    client.receive_data(await stream.receive_some())
    sent = [e for e in client.events_received() if isinstance(e, Frame)]
    assert [frame.opcode for frame in sent] == [Opcode.CLOSE]  # no pong for the flood


async def test_a_real_socket_flooding_pings_without_reading_gets_a_pong_per_read() -> None:
    """Over TCP: 100,000 pings (600 KB) from a peer that never reads; the server answers
    a pong per read, not per ping, and holds nothing for it."""
    served: list[WebSocket] = []

    async def keep_reading(socket: WebSocket) -> None:
        served.append(socket)
        while True:
            await socket.receive_batch()

    pings = bytes([0x89, 0x80, 0, 0, 0, 0]) * 100_000  # masked, empty
    with trio.fail_after(20):
        async with server(keep_reading) as (url, errors):
            port = int(url.split(":")[2].split("/")[0])
            raw = await trio.open_tcp_stream("127.0.0.1", port)
            client = ClientProtocol(parse_uri(url))
            client.send_request(client.connect())
            await raw.send_all(b"".join(client.data_to_send()))
            head = b""
            while b"\r\n\r\n" not in head:
                head += await raw.receive_some(4096)
            client.receive_data(head)  # the 101
            await raw.send_all(pings)
            # One message behind the pings, echoed back when they have all been read.
            client.send_close(1000)
            await raw.send_all(b"".join(client.data_to_send()))
            await trio.testing.wait_all_tasks_blocked()
            while not errors:  # noqa: ASYNC110 - the server reads its way to the close
                await trio.sleep(0.01)
            await raw.aclose()
    socket = served[0]
    assert socket.bytes_received > len(pings)
    reads = len(pings) // READ_BYTES + 2
    # At most one 2-byte pong per read (plus the close reply), never 200,000 bytes of them.
    assert socket.bytes_sent - len(head) <= 2 * reads + 4
    assert socket.peak_unsent_bytes <= socket.max_unsent_bytes
