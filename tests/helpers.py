"""Small test helpers: a minimal HTTP/1.1 client over real sockets (no extra dependency)
and the whole engine running in the test's own Trio run."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import msgspec
import trio

from api.root.engine import Engine, run_engine
from engine.config import settings_from_mapping

T = TypeVar("T")

HTTP_TIMEOUT_S = 10.0
ADMIN_TOKEN = "a" * 32
TWILIO_AUTH_TOKEN = "b" * 32
PUBLIC_URL = "http://127.0.0.1:8080"


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


async def http_request(
    method: str,
    url: str,
    *,
    json: object = None,
    body: bytes | None = None,
    token: str | None = None,
    declared_length: int | None = None,
    form: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> HttpResponse:
    """One request on a fresh connection (``Connection: close``), read to EOF."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    content_type = "application/json"
    if form is not None:
        payload, content_type = urlencode(form).encode(), "application/x-www-form-urlencoded"
    else:
        payload = msgspec.json.encode(json) if json is not None else (body or b"")
    length = len(payload) if declared_length is None else declared_length
    head = f"Host: {parts.netloc}\r\nConnection: close\r\nContent-Length: {length}\r\n"
    if payload:
        head += f"Content-Type: {content_type}\r\n"
    if token is not None:
        head += f"Authorization: Bearer {token}\r\n"
    for name, value in (headers or {}).items():
        head += f"{name}: {value}\r\n"
    with trio.fail_after(HTTP_TIMEOUT_S):
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
        async with stream:
            await stream.send_all(f"{method} {target} HTTP/1.1\r\n{head}\r\n".encode() + payload)
            chunks = []
            while chunk := await stream.receive_some(65536):
                chunks.append(chunk)
    response_head, _, response_body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *header_lines = response_head.decode("latin-1").split("\r\n")
    response_headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        response_headers[name.strip().lower()] = value.strip()
    return HttpResponse(int(status_line.split()[1]), response_headers, response_body)


def sid(n: int) -> str:
    """A well-formed CallSid (CA and 32 hexadecimal digits, as Twilio writes them; the
    webhooks refuse any other) that reads as its number: ``sid(7)`` is ``CA0...07``."""
    return f"CA{n:032d}"


def engine_settings(database_url: str, data_dir: Path) -> dict[str, str]:
    return {
        "HOST": "127.0.0.1",
        "PORT": "0",
        "PUBLIC_URL": PUBLIC_URL,
        "DATABASE_URL": database_url,
        "DATA_DIR": str(data_dir),
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "TWILIO_AUTH_TOKEN": TWILIO_AUTH_TOKEN,
        "DRAIN_TIMEOUT_S": "5",
        # A test's engine shares its process and thread with the simulated callers and
        # model it talks to, so the process's CPU and timer lag are not the engine's own:
        # admission by load is off here, and on in tests/test_admission_load.py.
        "ADMIT_MAX_CPU": "1",
        "ADMIT_MAX_LOOP_LAG_S": "10",
    }


@asynccontextmanager
async def running_engine(
    database_url: str, data_dir: Path, **overrides: str
) -> AsyncIterator[Engine]:
    """The whole engine in this Trio run; stopped (gracefully) when the block ends."""
    settings = settings_from_mapping(engine_settings(database_url, data_dir) | overrides)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            engine: Engine = await nursery.start(run_engine, settings)
            try:
                yield engine
            finally:
                engine.stop.request()


async def wait_until(
    check: Callable[[], Awaitable[T]], *, timeout_s: float, interval_s: float = 0.05
) -> T:
    """Poll ``check`` until it returns something truthy (for conditions an outside
    process reaches: PostgreSQL's notifications, the spool's replay), under a deadline."""
    with trio.fail_after(timeout_s):
        while not (result := await check()):  # noqa: ASYNC110 - the point of the helper
            await trio.sleep(interval_s)
    return result


API_MD = Path(__file__).parents[1] / "docs" / "api.md"
# Values the API returns as someone else wrote them (the model's arguments, a tool's JSON
# schema, the model's token counts): their keys are not the API's field names.
NOT_API_FIELDS = frozenset({"arguments", "parameters", "usage"})


def documented_fields(request: str) -> set[str]:
    """Every field name in docs/api.md's example answer to the ``curl`` line for ``request``
    (the indented lines under it), so the page shows every field the API returns. A value
    under a key of ``NOT_API_FIELDS`` written out in the example is left out."""
    lines = API_MD.read_text().splitlines()
    start = next(n for n, line in enumerate(lines) if "curl" in line and request in line)
    example: list[str] = []
    for line in lines[start + 1 :]:
        if not line.startswith("    "):
            break
        example.append(line)
    kinds = "|".join(sorted(NOT_API_FIELDS))
    text = re.sub(rf'"({kinds})":\{{[^}}]*\}}', r'"\1":{}', "\n".join(example))
    return set(re.findall(r'"(\w+)":', text))


def returned_fields(value: object, *, skip: frozenset[str] = NOT_API_FIELDS) -> set[str]:
    """Every key in a JSON answer, at any depth (not inside the values under ``skip``,
    which are not the API's names)."""
    if isinstance(value, dict):
        keys = set(value)
        for key, item in value.items():
            if key not in skip:
                keys |= returned_fields(item, skip=skip)
        return keys
    if isinstance(value, list):
        return set().union(*(returned_fields(item, skip=skip) for item in value))
    return set()
