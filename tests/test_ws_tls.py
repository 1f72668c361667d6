"""The model's socket over TLS (engine/ws_tls.py): the records en- and decrypted in
memory over the plain socket, against a real TLS server on 127.0.0.1 (trio's SSLStream,
a certificate from a throwaway CA)."""

from __future__ import annotations

import ssl
from functools import partial

import pytest
import trio
import trustme

from engine.ws import WebSocket, WebSocketClosed, accept, connect


async def echo_server(
    context: ssl.SSLContext, stream: trio.SocketStream, *, close_after: int | None = None
) -> None:
    """Echoes every text message; with ``close_after``, closes (1000) after that many."""
    async with stream:
        await _echo(trio.SSLStream(stream, context, server_side=True), close_after)


async def _echo(tls: trio.SSLStream[trio.SocketStream], close_after: int | None) -> None:
    try:
        socket, _ = await accept(
            tls, check=lambda request: None, max_message_bytes=1 << 20, send_timeout_s=5,
            handshake_timeout_s=5,
        )  # fmt: skip
    except (trio.BrokenResourceError, ssl.SSLError):
        return  # a client that did not trust us
    echoed = 0
    try:
        while close_after is None or echoed < close_after:
            for message in await socket.receive_batch():
                assert isinstance(message, str)
                await socket.send_text(message.encode())
                echoed += 1
        await socket.aclose(1000, "done")
    except WebSocketClosed:
        pass


async def serve(
    nursery: trio.Nursery, authority: trustme.CA, close_after: int | None = None
) -> int:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    handler = partial(echo_server, context, close_after=close_after)
    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def dial(port: int, trusted: trustme.CA) -> WebSocket:
    client_context = ssl.create_default_context()
    trusted.configure_trust(client_context)
    return await connect(
        f"wss://127.0.0.1:{port}/v1/realtime", headers=[], max_message_bytes=1 << 20,
        send_timeout_s=5, connect_timeout_s=5, ssl_context=client_context,
    )  # fmt: skip


async def test_messages_of_every_size_cross_tls_both_ways_in_order() -> None:
    authority = trustme.CA()
    async with trio.open_nursery() as nursery:
        port = await serve(nursery, authority)
        socket = await dial(port, authority)
        assert socket._tls is not None  # the in-memory path, not SSLStream
        sent = [
            f'{{"n":{n},"pad":"{"x" * size}"}}' for n, size in enumerate([0, 100, 20000, 70000] * 5)
        ]
        received: list[str | bytes] = []
        with trio.fail_after(10):
            for message in sent:
                await socket.send_many([message.encode()])
            while len(received) < len(sent):
                received += await socket.receive_batch()
        assert received == sent  # a 70 KB message spans several TLS records
        await socket.aclose()
        nursery.cancel_scope.cancel()


async def read_until_closed(socket: WebSocket) -> None:
    while True:
        await socket.receive_batch()


async def test_the_servers_close_reaches_the_client_through_tls() -> None:
    authority = trustme.CA()
    async with trio.open_nursery() as nursery:
        port = await serve(nursery, authority, close_after=1)
        socket = await dial(port, authority)
        with trio.fail_after(10):
            await socket.send_text(b'{"hello":1}')
            assert await socket.receive_batch() == ['{"hello":1}']
            with pytest.raises(WebSocketClosed) as closed:
                await read_until_closed(socket)
        await socket.aclose()
        assert closed.value.code == 1000
        nursery.cancel_scope.cancel()


async def test_a_certificate_from_an_untrusted_ca_is_refused() -> None:
    async with trio.open_nursery() as nursery:
        port = await serve(nursery, trustme.CA())
        with trio.fail_after(10), pytest.raises(ssl.SSLCertVerificationError):
            await dial(port, trustme.CA())  # trusts another CA
        nursery.cancel_scope.cancel()
