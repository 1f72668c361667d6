"""WebSockets for the per-frame path: websockets' Sans-I/O protocol over Trio streams.

Measured on this machine (stack-notes section 8), a bridge on trio-websocket saturates a
core below 40 calls: its reader task and internal channel cost two task switches per
message on top of pure-Python framing. websockets' protocol objects do the framing (with
C-accelerated masking and UTF-8 checks) and no I/O; this module is the thin Trio shell:
the owner of a connection reads with ``receive_batch`` (every message found in one read,
no task or channel per message) and writes with ``send_text`` under the connection's one
write lock, with a deadline, so a peer that stops reading cannot hang a call.

The traps noted in stack-notes, handled here: fragmented messages are reassembled;
protocol replies (pongs, the close reply) are flushed after every read; ``b""`` from the
protocol means half-close; every write has a deadline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import trio
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from engine.tls import client_context

if TYPE_CHECKING:
    import ssl

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    # (host, port) -> a connected byte stream.
    OpenStream = Callable[[str, int], Awaitable[trio.abc.Stream]]

HandshakeT = TypeVar("HandshakeT", Request, Response)

READ_BYTES = 65536
CLOSE_TIMEOUT_S = 2.0


class WebSocketClosed(Exception):
    """The connection is closed (by the peer, by us, or by a protocol error)."""

    def __init__(self, code: int | None, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"websocket closed ({code}: {reason})" if code else "websocket closed")


class HandshakeFailed(Exception):
    pass


class WebSocket:
    def __init__(
        self,
        stream: trio.abc.Stream,
        protocol: ServerProtocol | ClientProtocol,
        send_timeout_s: float,
    ) -> None:
        self._stream = stream
        self._protocol = protocol
        self._send_timeout_s = send_timeout_s
        self._early_events: list[Request | Response | Frame] = []
        self._write_lock = trio.Lock()
        self._fragments: list[bytes] = []
        self._fragment_text = False
        self._closed = False

    @property
    def close_code(self) -> int | None:
        return self._closed_error().code

    async def receive_batch(self) -> list[str | bytes]:
        """Every complete message found in the next read (at least one, or raise
        ``WebSocketClosed``): text as ``str``, binary as ``bytes``."""
        while True:
            messages = self._take_messages()
            await self._flush()
            if messages:
                return messages
            if self._protocol.close_expected() or self._closed:
                raise self._closed_error()
            try:
                data = await self._stream.receive_some(READ_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._closed = True
                raise WebSocketClosed(None, f"connection lost: {exc}") from None
            if data:
                self._protocol.receive_data(data)
            else:
                self._protocol.receive_eof()
                self._closed = True

    async def send_text(self, data: bytes) -> None:
        """Send one text message (``data`` is UTF-8 JSON). Raises ``WebSocketClosed``
        when the peer is gone, ``trio.TooSlowError`` past the send deadline."""
        try:
            self._protocol.send_text(data)
        except InvalidState:
            raise self._closed_error() from None
        await self._flush()

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close handshake, bounded; then the transport. Safe to call twice."""
        with trio.move_on_after(CLOSE_TIMEOUT_S) as scope:
            scope.shield = True
            try:
                self._protocol.send_close(code, reason)
                await self._flush()
                # Wait for the peer's close reply (or its end of the connection).
                while self._protocol.close_rcvd is None:
                    data = await self._stream.receive_some(READ_BYTES)
                    if not data:
                        break
                    self._protocol.receive_data(data)
            except (InvalidState, WebSocketClosed, trio.TooSlowError):
                pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        self._closed = True
        await trio.aclose_forcefully(self._stream)

    def _take_messages(self) -> list[str | bytes]:
        messages: list[str | bytes] = []
        events = self._protocol.events_received()
        if self._early_events:  # frames that came in the same read as the handshake
            events, self._early_events = [*self._early_events, *events], []
        for frame in events:
            if not isinstance(frame, Frame):
                continue
            if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                self._fragment_text = frame.opcode is Opcode.TEXT
                self._fragments = [bytes(frame.data)]
            elif frame.opcode is Opcode.CONT:
                self._fragments.append(bytes(frame.data))
            else:
                continue  # ping, pong, close: the protocol has queued any reply
            if frame.fin:
                data = b"".join(self._fragments)
                self._fragments = []
                messages.append(data.decode() if self._fragment_text else data)
        return messages

    async def _flush(self) -> None:
        chunks = self._protocol.data_to_send()
        if not chunks:
            return
        if not self._write_lock.locked() and all(chunks):
            # The fast path (stack-notes section 8, variant F): one non-blocking write on
            # a plain socket, no checkpoint, no timer. Only when no other write is under
            # way (order is kept) and nothing needs the stream API (TLS, half-close);
            # what the kernel does not take now goes by the bounded path below.
            data = b"".join(chunks)
            sent = self._write_now(data)
            if sent == len(data):
                return
            chunks = [data[sent:]]
        async with self._write_lock:
            try:
                with trio.fail_after(self._send_timeout_s):
                    for chunk in chunks:
                        if chunk:
                            await self._stream.send_all(chunk)
                        elif isinstance(self._stream, trio.SocketStream):
                            await self._stream.send_eof()  # the protocol's half-close
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._closed = True
                closed = self._closed_error()  # a peer that closed first has told us why
                if closed.code is None:
                    closed = WebSocketClosed(None, f"connection lost: {exc}")
                raise closed from None

    def _write_now(self, data: bytes) -> int:
        """Bytes written at once by ``write(2)`` on the plain socket's descriptor; 0 when
        the socket would block, is TLS, or is closed (the slow path then decides)."""
        if self._closed or not isinstance(self._stream, trio.SocketStream):
            return 0
        fd = self._stream.socket.fileno()  # -1 once closed: never a reused descriptor
        if fd < 0:
            return 0
        try:
            return os.write(fd, data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            return 0  # a broken connection: the slow path raises it as WebSocketClosed

    def _closed_error(self) -> WebSocketClosed:
        # The peer's close frame, as soon as it arrived (close_code waits for the TCP close).
        received = self._protocol.close_rcvd or self._protocol.close_sent
        if received is not None:
            return WebSocketClosed(received.code, received.reason)
        return WebSocketClosed(self._protocol.close_code, self._protocol.close_reason or "")


@dataclass(frozen=True, slots=True)
class Rejection:
    status: int
    text: str


async def accept(
    stream: trio.abc.Stream,
    *,
    check: Callable[[Request], Rejection | None],
    max_message_bytes: int,
    send_timeout_s: float,
    handshake_timeout_s: float,
) -> tuple[WebSocket, Request]:
    """Server side: read the upgrade request, let ``check`` refuse it (signature, path,
    token), accept it otherwise. ``HandshakeFailed`` when refused or malformed."""
    protocol = ServerProtocol(max_size=max_message_bytes)
    socket = WebSocket(stream, protocol, send_timeout_s)
    with trio.fail_after(handshake_timeout_s):
        request = await _read_handshake(socket, Request)
        rejection = check(request)
        response = (
            protocol.reject(rejection.status, rejection.text)
            if rejection is not None
            else protocol.accept(request)
        )
        protocol.send_response(response)
        await socket._flush()
    if rejection is not None or response.status_code != 101:
        await trio.aclose_forcefully(stream)
        reason = rejection.text if rejection else f"HTTP {response.status_code}"
        raise HandshakeFailed(f"upgrade refused: {reason}")
    return socket, request


async def connect(
    url: str,
    *,
    headers: list[tuple[str, str]],
    max_message_bytes: int,
    send_timeout_s: float,
    connect_timeout_s: float,
    open_stream: OpenStream | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> WebSocket:
    """Client side, ``ws://`` or ``wss://`` (TLS through ``trio.SSLStream``).
    ``open_stream`` replaces the TCP connection (in-memory transports for tests run
    under a mock clock)."""
    uri = parse_uri(url)
    protocol = ClientProtocol(uri, max_size=max_message_bytes)
    with trio.fail_after(connect_timeout_s):
        opener = open_stream or trio.open_tcp_stream
        stream: trio.abc.Stream = await opener(uri.host, uri.port)
        try:
            if uri.secure:
                context = ssl_context or client_context()
                tls = trio.SSLStream(stream, context, server_hostname=uri.host)
                await tls.do_handshake()
                stream = tls
            socket = WebSocket(stream, protocol, send_timeout_s)
            request = protocol.connect()
            for name, value in headers:
                request.headers[name] = value
            protocol.send_request(request)
            await socket._flush()
            response = await _read_handshake(socket, Response)
        except BaseException:
            # A peer that never answers (timeout), a cancelled call: no socket is leaked.
            await trio.aclose_forcefully(stream)
            raise
    if protocol.handshake_exc is not None or response.status_code != 101:
        await trio.aclose_forcefully(stream)
        raise HandshakeFailed(f"upgrade refused: HTTP {response.status_code}")
    return socket


async def _read_handshake(socket: WebSocket, kind: type[HandshakeT]) -> HandshakeT:
    """The peer's request or response. A frame the peer sent right behind it, read in
    the same chunk, is kept for the first ``receive_batch`` (never dropped)."""
    stream, protocol = socket._stream, socket._protocol
    while True:
        events = protocol.events_received()
        for n, event in enumerate(events):
            if isinstance(event, kind):
                socket._early_events = list(events[n + 1 :])
                return event
        if protocol.handshake_exc is not None:
            raise HandshakeFailed(f"invalid handshake: {protocol.handshake_exc}")
        data = await stream.receive_some(READ_BYTES)
        if not data:
            raise HandshakeFailed("connection closed during the handshake")
        protocol.receive_data(data)
