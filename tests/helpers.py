"""Small test helpers: a minimal HTTP/1.1 client over real sockets (no extra dependency)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import msgspec
import trio

HTTP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return msgspec.json.decode(self.body)


async def http_request(method: str, url: str) -> HttpResponse:
    """One request on a fresh connection (``Connection: close``), read to EOF."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    target = parts.path or "/"
    with trio.fail_after(HTTP_TIMEOUT_S):
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
        async with stream:
            request = (
                f"{method} {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n"
            )
            await stream.send_all(request.encode())
            chunks = []
            while chunk := await stream.receive_some(65536):
                chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return HttpResponse(int(status_line.split()[1]), headers, body)
