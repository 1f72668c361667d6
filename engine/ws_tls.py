"""TLS for the model's socket (``wss://``) on the per-frame path, without ``trio.SSLStream``.

``trio.SSLStream`` gives a TLS connection Trio's stream API: every write takes its
conflict detector, a lock and a checkpoint, every read another, and the fast write path
of engine/ws.py (one non-blocking ``write(2)``) cannot be used through it. Measured
beside the plain socket it cost the engine about 60 % more CPU per call-second
(docs/performance.md, "The model leg over TLS"). Here the same ``ssl`` module does the
cryptography through memory BIOs (``SSLContext.wrap_bio``, what ``SSLStream`` uses
inside) and the plain socket is read and written as for ``ws://``: ``encrypt`` turns
what is to be sent into TLS records, ``decrypt`` what was read into plaintext.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import trio

READ_BYTES = 65536


class TlsClosed(Exception):
    """The peer ended the TLS session (close_notify or the connection's end)."""


class Tls:
    """One client TLS session over memory BIOs; owns no socket."""

    def __init__(self, context: ssl.SSLContext, server_hostname: str) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._incoming, self._outgoing, server_hostname=server_hostname
        )

    async def handshake(self, stream: trio.SocketStream) -> None:
        """The TLS handshake over ``stream`` (the caller bounds it with a deadline);
        ``ssl.SSLError`` when it fails (a certificate not trusted, say)."""
        while True:
            try:
                self._ssl.do_handshake()
            except ssl.SSLWantReadError:
                pass
            else:
                break
            pending = self._outgoing.read()
            if pending:
                await stream.send_all(pending)
            data = await stream.receive_some(READ_BYTES)
            if not data:
                raise ssl.SSLEOFError("the connection closed during the TLS handshake")
            self._incoming.write(data)
        pending = self._outgoing.read()
        if pending:
            await stream.send_all(pending)

    def encrypt(self, plaintext: bytes) -> bytes:
        """TLS records for ``plaintext`` (and anything TLS itself has to send)."""
        if plaintext:
            self._ssl.write(plaintext)
        return self._outgoing.read()

    def decrypt(self, records: bytes) -> bytes:
        """The plaintext in what was read (``b""`` while a record is incomplete).
        ``records`` empty: the connection ended. ``TlsClosed`` once the session is over."""
        if records:
            self._incoming.write(records)
        else:
            self._incoming.write_eof()
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._ssl.read(READ_BYTES)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                if chunks:
                    break  # the plaintext first; the end is seen on the next read
                raise TlsClosed("the TLS session ended") from None
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def pending_output(self) -> bytes:
        """What TLS itself wants sent after a read (a key update's answer), if anything."""
        return self._outgoing.read()
