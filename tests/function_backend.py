"""A business's function backend for tests: a tiny real HTTP server on 127.0.0.1 that
records what it received and answers by the function's name."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import msgspec
import trio


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    path: str = ""

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


@dataclass
class FunctionBackend:
    """``answers`` maps a function name to (HTTP status, body bytes, delay in seconds)."""

    answers: dict[str, tuple[int, bytes, float]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    url: str = ""

    async def serve(self, *, task_status: trio.TaskStatus[str]) -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1")
            )
            self.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/functions"
            task_status.started(self.url)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            request = await read_request(stream)
            if request is None:
                return
            self.received.append(request)
            name = request.json().get("name", "")
            status, answer, delay_s = self.answers.get(name, (200, b'{"ok": true}', 0.0))
            await trio.sleep(delay_s)
            reply = (
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(answer)}\r\nConnection: close\r\n\r\n"
            ).encode() + answer
            await stream.send_all(reply)


async def read_request(stream: trio.SocketStream) -> Received | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    request_line, *lines = head.decode().split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    while len(body) < int(headers.get("content-length", "0")):
        body += await stream.receive_some(65536)
    return Received(body, headers, request_line.split(" ")[1])


@dataclass
class TwilioRestStandIn:
    """A local HTTP peer (Twilio's REST API, an alert webhook): records each request and
    answers ``status``, ``answer_after_s`` after the request arrived (``arrived`` is set
    then: a test can end the call's stream before the answer, as Twilio often does)."""

    received: list[Received] = field(default_factory=list)
    status: int = 200
    answer_after_s: float = 0.0
    arrived: trio.Event = field(default_factory=trio.Event)
    keep_alive: bool = False  # answer every request of a connection, as Twilio's API does
    connections: int = 0  # TCP connections accepted

    async def serve(self, *, task_status: trio.TaskStatus[str]) -> None:
        async with trio.open_nursery() as nursery:
            serve = partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1")
            listeners = await nursery.start(serve)
            task_status.started(f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}")

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        async with stream:
            while True:
                request = await read_request(stream)
                if request is None:
                    return
                self.received.append(request)
                self.arrived.set()
                await trio.sleep(self.answer_after_s)
                answer = b'{"sid": "CA", "status": "in-progress"}'
                connection = "keep-alive" if self.keep_alive else "close"
                await stream.send_all(
                    f"HTTP/1.1 {self.status} X\r\nContent-Type: application/json\r\n".encode()
                    + f"Content-Length: {len(answer)}\r\nConnection: {connection}\r\n\r\n".encode()
                    + answer
                )
                if not self.keep_alive:
                    return
