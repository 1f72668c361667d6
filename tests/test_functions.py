"""Calling a business's functions against a real local HTTP backend."""

from __future__ import annotations

import httpx
import pytest
import trio

from actors.functions import SIGNATURE_HEADER, FunctionResult, call_function
from engine.projects import Project, parse_project
from engine.signing import sign
from tests.function_backend import FunctionBackend


def project(url: str | None, timeout_s: float = 2.0) -> Project:
    data: dict[str, object] = {
        "id": "acme",
        "name": "Acme",
        "timezone": "UTC",
        "function_timeout_s": timeout_s,
        "function_secret": "fn-secret",
    }
    if url:
        data["function_url"] = url
    return parse_project(data)


async def run(backend: FunctionBackend, name: str, timeout_s: float = 2.0) -> FunctionResult:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(backend.serve)
        async with httpx.AsyncClient() as client:
            result = await call_function(
                client,
                project(url, timeout_s),
                name,
                {"day": "tomorrow"},
                "CA1",
            )
        nursery.cancel_scope.cancel()
    return result


async def test_a_signed_call_returns_the_backends_json() -> None:
    backend = FunctionBackend({"get_slots": (200, b'{"slots": ["9:00"]}', 0.0)})
    result = await run(backend, "get_slots")
    (request,) = backend.received
    assert request.json() == {
        "name": "get_slots",
        "arguments": {"day": "tomorrow"},
        "call_sid": "CA1",
        "project_id": "acme",
    }
    assert request.headers[SIGNATURE_HEADER.lower()] == sign("fn-secret", request.body)
    assert (result.outcome, result.http_status, result.output) == (
        "ok", 200, '{"slots":["9:00"]}',
    )  # fmt: skip


@pytest.mark.parametrize(
    ("answer", "outcome", "status", "said"),
    [
        pytest.param((500, b"{}", 0.0), "error", 500, "failed (HTTP 500)", id="http-500"),
        pytest.param((200, b"<html>", 0.0), "error", 200, "not JSON", id="not-json"),
        pytest.param((200, b"{}", 5.0), "timeout", None, "did not answer within 0.3 s", id="hangs"),
        # valid JSON, but 4 MiB: read only up to the bound, then refused in clear words
        pytest.param(
            (200, b'{"slots": "' + b"x" * (4 << 20) + b'"}', 0.0),
            "error",
            200,
            "answered more than 64 KiB",
            id="too-large",
        ),
    ],
)
async def test_failures_become_clear_errors_for_the_model(
    answer: tuple[int, bytes, float], outcome: str, status: int | None, said: str
) -> None:
    result = await run(FunctionBackend({"book": answer}), "book", timeout_s=0.3)
    assert result.outcome == outcome
    assert result.http_status == status
    assert said in result.output


async def test_an_unreachable_backend_or_none_at_all() -> None:
    async with httpx.AsyncClient() as client:
        unreachable = await call_function(
            client,
            project("http://127.0.0.1:1/fn"),
            "book",
            {},
            "CA1",
        )
        missing = await call_function(client, project(None), "book", {}, "CA1")
    assert (unreachable.outcome, missing.outcome) == ("error", "error")
    assert "could not be reached" in unreachable.output
    assert "no function backend" in missing.output
