"""WebSockets for the per-frame path: websockets' Sans-I/O protocol over Trio streams.

Measured on a machine of the same kind (docs/stack-measurements.md 8), a bridge on
trio-websocket saturates a core below 40 calls: its reader task and internal channel
cost two task switches per message on top of pure-Python framing. The common frames are
parsed and built by engine/ws_frames.py, websockets' protocol objects do the handshake,
control frames and anything uncommon, and TLS is done in memory (engine/ws_tls.py); this
module is the Trio shell:
the owner of a connection reads with ``receive_batch`` (every message found in one read,
no task or channel per message) and writes with ``send_text`` under the connection's one
write lock, with a deadline, so a peer that stops reading cannot hang a call.

The traps noted in docs/stack-measurements.md 8, handled here: fragmented messages are reassembled;
protocol replies (pongs, the close reply) are flushed after every read; ``b""`` from the
protocol means half-close; every write has a deadline.

And what a peer that sends without reading could make us hold, bounded here:
- pongs: one per read, to the latest ping (RFC 6455 5.5.3 allows answering only the most
  recent), not one per ping, so a read full of pings costs one small write, not thousands;
- a ``ControlBudget`` (optional, the media port sets one): pings and pongs beyond it close
  the connection at once (1008, fault ``ping_flood``);
- bytes waiting to be written: at most ``max_unsent_bytes`` once something is already
  waiting; a write past it is refused at once with ``PeerNotReading`` (a
  ``trio.TooSlowError``, as when a write misses its deadline: fault ``peer_not_reading``
  either way) and nothing more is queued; closing after it skips the handshake;
- the close handshake: while we wait for the peer's close reply, what it sends is parsed
  and dropped at once, and at most ``MAX_BYTES_AFTER_CLOSE`` of it.
``fault`` says which limit ended a connection (``None``: none did), for the refusal counts.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import trio
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidState, PayloadTooBig, ProtocolError
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Protocol, State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from engine import ws_frames
from engine.ready_poller import current_poller
from engine.tls import client_context
from engine.ws_tls import Tls, TlsClosed

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    # (host, port) -> a connected byte stream.
    OpenStream = Callable[[str, int], Awaitable[trio.abc.Stream]]

HandshakeT = TypeVar("HandshakeT", Request, Response)

READ_BYTES = 65536
CLOSE_TIMEOUT_S = 2.0
# A default, for connections that set none: far above any message this engine sends
# (the largest are model audio deltas of a few KB) and small enough that a thousand
# stuck peers cannot hold a gigabyte.
MAX_UNSENT_BYTES = 1 << 20
# While we wait for a peer's close reply: two reads' worth, then we stop listening (a
# peer that answers our close with a flood has had its chance).
MAX_BYTES_AFTER_CLOSE = 2 * READ_BYTES


class WebSocketClosed(Exception):
    """The connection is closed (by the peer, by us, or by a protocol error)."""

    def __init__(self, code: int | None, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"websocket closed ({code}: {reason})" if code else "websocket closed")


class HandshakeFailed(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status we answered; None: no valid request came


class PeerNotReading(trio.TooSlowError):
    """A write refused because this much is already waiting for the peer to read: the
    same verdict as a missed send deadline, reached without waiting for it."""


class HandshakeAbandoned(HandshakeFailed):
    """The peer closed the connection before its handshake was complete."""


@dataclass(frozen=True, slots=True)
class ControlBudget:
    """Pings and pongs a peer may send: ``burst`` at once, refilled at ``per_s``."""

    burst: int
    per_s: float


class ControlFlood(ProtocolError):
    """More pings and pongs than the connection's ``ControlBudget`` allows."""


class _PongsCoalesced(Protocol):
    """The protocol, answering only the latest ping of each read (RFC 6455 5.5.3), and
    spending a ``ControlBudget`` (if set) on every ping and pong instead of queueing them
    as events nobody reads. Overdrawn, it fails the connection (1008) from inside the
    parser, so the rest of that read is dropped unparsed: a read full of pings costs a
    few frames' parsing, not thousands."""

    _budget: ControlBudget | None = None
    _tokens = 0.0
    _tokens_at_s = 0.0
    _now_s = 0.0
    _ping_data: bytes | None = None

    def limit_control_frames(self, budget: ControlBudget) -> None:
        self._budget = budget
        self._tokens = float(budget.burst)
        self._tokens_at_s = self._now_s = trio.current_time()

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is not Opcode.PING and frame.opcode is not Opcode.PONG:
            super().recv_frame(frame)
            return
        budget = self._budget
        if budget is not None:  # a token bucket: ``burst`` at once, ``per_s`` refill
            refilled = self._tokens + (self._now_s - self._tokens_at_s) * budget.per_s
            self._tokens = min(float(budget.burst), refilled) - 1
            self._tokens_at_s = self._now_s
            if self._tokens < 0:
                self.fail(CloseCode.POLICY_VIOLATION, "too many pings")
                raise ControlFlood("too many pings")  # the parser stops: the rest is dropped
        if frame.opcode is Opcode.PING:
            self._ping_data = bytes(frame.data)

    def receive_data(self, data: bytes | bytearray) -> None:
        self._now_s = trio.current_time()  # one clock reading for every frame of a read
        super().receive_data(data)
        self.queue_pong()

    def queue_pong(self) -> None:
        """The pong to the latest ping not yet answered, once and while the connection
        is open (a ping that came behind the upgrade request waits for the 101)."""
        if self._ping_data is not None and self.state is State.OPEN:
            self.send_pong(self._ping_data)
            self._ping_data = None


class _Server(_PongsCoalesced, ServerProtocol):
    pass


class _Client(_PongsCoalesced, ClientProtocol):
    pass


class WebSocket:
    def __init__(
        self,
        stream: trio.abc.Stream,
        protocol: _PongsCoalesced,
        send_timeout_s: float,
        *,
        max_unsent_bytes: int = MAX_UNSENT_BYTES,
        control_budget: ControlBudget | None = None,
        tls: Tls | None = None,
    ) -> None:
        self._stream = stream
        # TLS over the plain socket (engine/ws_tls.py): the socket is read and written
        # as for ws://, the records en- and decrypted in memory.
        self._tls = tls
        self._tls_backlog = b""  # records TLS produced while reading, sent first
        # Readiness from the shared poller when the engine runs one (engine/ready_poller.py).
        self._poller = current_poller() if isinstance(stream, trio.SocketStream) else None
        self._protocol = protocol
        self._send_timeout_s = send_timeout_s
        self._early_events: list[Request | Response | Frame] = []
        # The common frames are parsed and built by engine/ws_frames.py; websockets'
        # protocol sees the rest (control frames, and everything from the first unusual
        # frame on, for good: ``_fast`` False).
        self._fast = True
        self._buffer = bytearray()  # received, not yet a whole frame (fast path)
        self._parsed: list[str | bytes] = []  # messages parsed, not yet returned
        self._masked_in = isinstance(protocol, ServerProtocol)  # a client masks its frames
        self._mask_keys = ws_frames.MaskKeys() if isinstance(protocol, ClientProtocol) else None
        limit = protocol.max_message_size
        self._max_size = limit if limit is not None else 1 << 62
        self._write_lock = trio.Lock()
        self._fragments: list[bytes] = []
        self._unread: list[str | bytes] = []  # given back by a reader: returned first
        self._fragment_text = False
        self._closed = False
        self._fault: str | None = None
        self.max_unsent_bytes = max_unsent_bytes
        self._unsent_bytes = 0  # taken from the protocol, not yet taken by the kernel
        self.peak_unsent_bytes = 0
        self.bytes_received = 0  # everything the peer sent, the upgrade request included
        self.bytes_sent = 0  # everything the kernel took from us
        if control_budget is not None:
            protocol.limit_control_frames(control_budget)

    @property
    def close_code(self) -> int | None:
        return self._closed_error().code

    @property
    def unsent_bytes(self) -> int:
        return self._unsent_bytes

    @property
    def fault(self) -> str | None:
        """Which limit ended the connection: ``ping_flood``, ``peer_not_reading``,
        ``message_too_big`` or ``protocol_error``; ``None`` when none did."""
        if self._fault is not None:
            return self._fault
        error = self._protocol.parser_exc
        if error is None or isinstance(error, EOFError):
            return None  # EOF: the peer left, which is no fault of a limit
        if isinstance(error, ControlFlood):
            return "ping_flood"
        return "message_too_big" if isinstance(error, PayloadTooBig) else "protocol_error"

    def unread(self, messages: list[str | bytes]) -> None:
        """Give back messages a reader took but is not the one to handle (the media
        frames read in the same batch as a stream's ``start``): the next
        ``receive_batch`` returns them first, so none is lost between two readers."""
        self._unread = [*messages, *self._unread]

    async def receive_batch(self) -> list[str | bytes]:
        """Every complete message found in the next read (at least one, or raise
        ``WebSocketClosed``): text as ``str``, binary as ``bytes``."""
        while True:
            if isinstance(self._protocol.parser_exc, ControlFlood):
                # Its 1008 is queued; it goes only if it goes at once: a flooder that does
                # not read would otherwise hold the connection for the send deadline.
                await self._abort("ping_flood")
                raise self._closed_error()
            messages = self._take_messages()
            if self._unread:
                messages, self._unread = [*self._unread, *messages], []
            await self._flush()
            if messages:
                return messages
            if self._protocol.close_expected() or self._closed:
                raise self._closed_error()
            try:
                data = await self._read()
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._closed = True
                raise WebSocketClosed(None, f"connection lost: {exc}") from None
            if data:
                self.bytes_received += len(data)
                self._receive(data)
            else:
                self._protocol.receive_eof()
                self._closed = True

    def _receive(self, data: bytes | bytearray) -> None:
        """Parse what the peer sent: the common frames here, the rest by websockets."""
        if not self._fast:
            self._protocol.receive_data(data)
            return
        self._buffer += data
        parsed = ws_frames.parse(self._buffer, masked=self._masked_in, max_size=self._max_size)
        if parsed.messages:
            self._parsed += parsed.messages
        # Control frames (pongs, close replies, the ping budget) in one feed, so a read
        # full of pings is answered once, to the latest; then what is left to websockets.
        for_websockets = b"".join(parsed.control)
        if parsed.rest is not None:
            self._fast = False
            for_websockets += parsed.rest
        if for_websockets:
            self._protocol.receive_data(for_websockets)

    def _go_slow(self) -> None:
        """From now on websockets parses everything (what is buffered first)."""
        if self._fast:
            self._fast = False
            buffered, self._buffer = bytes(self._buffer), bytearray()
            if buffered:
                self._protocol.receive_data(buffered)

    async def _read(self) -> bytes:
        """The next bytes from the peer. A plain socket is read as variant F reads it
        (docs/performance.md): wait until it is readable, then one ``read(2)``. Trio's
        ``receive_some`` tries the read first, which on a paced stream (a frame every
        20 ms) almost always fails with EAGAIN: a wasted system call, an exception and
        two checkpoints per message. ``wait_readable`` is itself a checkpoint, so a
        call still yields on every read and a cancelled call still stops here."""
        stream = self._stream
        if not isinstance(stream, trio.SocketStream):
            return bytes(await stream.receive_some(READ_BYTES))  # in-memory test streams
        while True:
            fd = stream.socket.fileno()  # -1 once closed: never a reused descriptor
            if fd < 0:
                raise trio.ClosedResourceError("the socket was closed")
            poller = self._poller
            if poller is None:
                await trio.lowlevel.wait_readable(stream.socket)
            else:
                await poller.wait_readable(stream.socket)
            try:
                data = os.read(fd, READ_BYTES)
            except (BlockingIOError, InterruptedError):
                continue  # woken with nothing to read (rare): wait again
            except OSError as exc:
                raise trio.BrokenResourceError(f"socket read failed: {exc}") from exc
            if poller is not None and len(data) == READ_BYTES:
                poller.mark_ready(stream.socket)  # more may wait: edge-triggered won't say
            if self._tls is None:
                return data
            try:
                plaintext = self._tls.decrypt(data)
            except TlsClosed:
                return b""
            except ssl.SSLError as exc:
                raise trio.BrokenResourceError(f"TLS failed: {exc}") from exc
            self._tls_backlog += self._tls.pending_output()
            if plaintext or not data:
                return plaintext
            # only part of a TLS record so far: wait for the rest

    def _text_frame(self, data: bytes) -> bytes:
        if self._protocol.state is not State.OPEN:
            raise self._closed_error()  # closing or closed: nothing more is sent
        mask_key = self._mask_keys.take() if self._mask_keys is not None else None
        return ws_frames.text_frame(data, mask_key)

    async def send_text(self, data: bytes) -> None:
        """Send one text message (``data`` is UTF-8 JSON). Raises ``WebSocketClosed``
        when the peer is gone, ``trio.TooSlowError`` past the send deadline."""
        await self._flush(self._text_frame(data))

    async def send_many(self, messages: list[bytes]) -> None:
        """Text messages in one write (the audio deltas of one read, each with its mark):
        one system call where a ``send_text`` each would make one each."""
        await self._flush(b"".join([self._text_frame(message) for message in messages]))

    async def aclose(
        self, code: int = 1000, reason: str = "", *, timeout_s: float = CLOSE_TIMEOUT_S
    ) -> None:
        """Close handshake, bounded; then the transport. Safe to call twice. After a
        fault there is no handshake: that peer does not read, or is not owed one."""
        if not self._closed and self.fault is None:
            with trio.move_on_after(timeout_s) as scope:
                scope.shield = True
                try:
                    self._protocol.send_close(code, reason)
                    await self._flush()
                    await self._wait_close_reply()
                except (InvalidState, WebSocketClosed, trio.TooSlowError):
                    pass
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        self._closed = True
        await self._close_transport()

    async def _close_transport(self) -> None:
        if self._poller is not None and isinstance(self._stream, trio.SocketStream):
            self._poller.forget(self._stream.socket)  # a parked reader is told, not stranded
        await trio.aclose_forcefully(self._stream)

    async def _wait_close_reply(self) -> None:
        """Until the peer's close reply (or its end of the connection), within
        ``MAX_BYTES_AFTER_CLOSE``. What came before the reply is dropped as it is
        parsed: nobody reads a connection being closed, and a peer that floods while we
        wait would otherwise pile up frames here."""
        received = 0
        self._go_slow()
        while self._protocol.close_rcvd is None and received < MAX_BYTES_AFTER_CLOSE:
            data = await self._read()
            if not data:
                return
            received += len(data)
            self._protocol.receive_data(data)
            self._protocol.events_received()
            self._protocol.data_to_send()  # nothing more goes to a peer we are leaving

    async def _abort(self, fault: str) -> None:
        """Give up on the peer at once: what the protocol queued (a close frame) goes
        only if it can be written without waiting (this peer is not reading, or is not
        owed the wait), then the transport closes. A task blocked writing to it sees
        the connection closed."""
        self._fault = fault
        data = b"".join(self._protocol.data_to_send())
        if data and not self._write_lock.locked():
            self.bytes_sent += self._write_now(data)
        self._closed = True
        await self._close_transport()

    def _take_messages(self) -> list[str | bytes]:
        messages, self._parsed = self._parsed, []  # the fast path's come first
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

    async def _flush(self, frames: bytes = b"") -> None:
        """Write what websockets' protocol has queued (pongs, a close), then ``frames``
        (ours, already framed), in that order."""
        chunks = self._protocol.data_to_send()
        if frames:
            chunks.append(frames)
        if self._tls is not None:
            # One run of records for all of it (a TLS connection is never half-closed:
            # the protocol's EOF marker, an empty chunk, drops out of the join).
            records = self._tls_backlog + self._tls.encrypt(b"".join(chunks))
            self._tls_backlog = b""
            chunks = [records] if records else []
        if not chunks:
            return
        if not self._write_lock.locked() and all(chunks):
            # The fast path (docs/stack-measurements.md 8, variant F): one non-blocking write on
            # a plain socket, no checkpoint, no timer. Only when no other write is under
            # way (order is kept) and nothing needs the stream API (a half-close, a stream
            # that is not a socket);
            # what the kernel does not take now goes by the bounded path below.
            data = b"".join(chunks)
            sent = self._write_now(data)
            self.bytes_sent += sent
            if sent == len(data):
                return
            chunks = [data[sent:]]
        size = sum(len(chunk) for chunk in chunks)
        if self._unsent_bytes and self._unsent_bytes + size > self.max_unsent_bytes:
            # Bytes are already waiting for this peer to read, and this would pile more
            # behind them past the bound: it is not reading. Nothing more is held for it;
            # the owner ends the connection (as after a missed deadline).
            self._fault = "peer_not_reading"
            raise PeerNotReading(f"peer not reading: {self._unsent_bytes} bytes unsent")
        self._unsent_bytes += size
        self.peak_unsent_bytes = max(self.peak_unsent_bytes, self._unsent_bytes)
        try:
            async with self._write_lock:
                with trio.fail_after(self._send_timeout_s):
                    for chunk in chunks:
                        if chunk:
                            await self._stream.send_all(chunk)
                            self.bytes_sent += len(chunk)
                        elif isinstance(self._stream, trio.SocketStream):
                            await self._stream.send_eof()  # the protocol's half-close
        except trio.TooSlowError:
            self._fault = self._fault or "peer_not_reading"
            raise
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._closed = True
            closed = self._closed_error()  # a peer that closed first has told us why
            if closed.code is None:
                closed = WebSocketClosed(None, f"connection lost: {exc}")
            raise closed from None
        finally:
            self._unsent_bytes -= size

    def _write_now(self, data: bytes) -> int:
        """Bytes written at once by ``write(2)`` on the plain socket's descriptor; 0 when
        the socket would block, is not a socket, or is closed (the slow path then decides)."""
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
        reason = self._protocol.close_reason or (self._fault or "").replace("_", " ")
        return WebSocketClosed(self._protocol.close_code, reason)


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
    max_unsent_bytes: int = MAX_UNSENT_BYTES,
    control_budget: ControlBudget | None = None,
) -> tuple[WebSocket, Request]:
    """Server side: read the upgrade request, let ``check`` refuse it (signature, path,
    token), accept it otherwise. ``HandshakeFailed`` when refused or malformed."""
    protocol = _Server(max_size=max_message_bytes)
    socket = WebSocket(
        stream,
        protocol,
        send_timeout_s,
        max_unsent_bytes=max_unsent_bytes,
        control_budget=control_budget,
    )
    with trio.fail_after(handshake_timeout_s):
        request = await _read_handshake(socket, Request)
        rejection = check(request)
        response = (
            protocol.reject(rejection.status, rejection.text)
            if rejection is not None
            else protocol.accept(request)
        )
        protocol.send_response(response)
        protocol.queue_pong()  # to a ping that came right behind the request
        await socket._flush()
    if rejection is not None or response.status_code != 101:
        await socket._close_transport()
        reason = rejection.text if rejection else f"HTTP {response.status_code}"
        raise HandshakeFailed(f"upgrade refused: {reason}", response.status_code)
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
    protocol = _Client(uri, max_size=max_message_bytes)
    with trio.fail_after(connect_timeout_s):
        opener = open_stream or trio.open_tcp_stream
        stream: trio.abc.Stream = await opener(uri.host, uri.port)
        try:
            tls: Tls | None = None
            if uri.secure and isinstance(stream, trio.SocketStream):
                tls = Tls(ssl_context or client_context(), uri.host)
                await tls.handshake(stream)
            elif uri.secure:  # a stream that is not a socket (tests): the stream API
                ssl_stream = trio.SSLStream(
                    stream, ssl_context or client_context(), server_hostname=uri.host
                )
                await ssl_stream.do_handshake()
                stream = ssl_stream
            socket = WebSocket(stream, protocol, send_timeout_s, tls=tls)
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
    """The peer's request or response. websockets is fed the HTTP head only; what came
    behind it in the same read (a first frame) is the fast path's, parsed at once and
    returned by the first ``receive_batch`` (never dropped). A head that needs more
    than itself (a refusal with a body) gets the rest too, and the connection then
    stays with websockets' parser."""
    protocol = socket._protocol
    received = bytearray()
    fed = 0  # bytes of ``received`` given to websockets
    while True:
        events = protocol.events_received()
        for n, event in enumerate(events):
            if isinstance(event, kind):
                socket._early_events = list(events[n + 1 :])
                if socket._fast:
                    socket._receive(received[fed:])
                return event
        if protocol.handshake_exc is not None:
            raise HandshakeFailed(f"invalid handshake: {protocol.handshake_exc}")
        if socket._fast and fed and fed == _head_end(received):
            socket._go_slow()  # the head alone was not enough: websockets takes it all
            protocol.receive_data(bytes(received[fed:]))
            fed = len(received)
            continue
        data = await socket._read()
        if not data:
            raise HandshakeAbandoned("connection closed during the handshake")
        socket.bytes_received += len(data)
        received += data
        if not socket._fast:
            protocol.receive_data(data)
            fed = len(received)
            continue
        end = _head_end(received)
        cut = len(received) if end is None else end
        protocol.receive_data(bytes(received[fed:cut]))
        fed = cut


def _head_end(received: bytearray) -> int | None:
    """Where the HTTP head ends (after its blank line), None while it has not."""
    end = received.find(b"\r\n\r\n")
    return None if end < 0 else end + 4
