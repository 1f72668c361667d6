"""Request reading at the ASGI level: the body limit holds without a declared length."""

from __future__ import annotations

import pytest

from api.http.asgi import MAX_BODY_BYTES, BodyTooLarge, Message, Receive, Scope, read_request


def scope(headers: list[tuple[bytes, bytes]]) -> Scope:
    return {"method": "POST", "path": "/admin/projects", "headers": headers, "query_string": b"a=1"}


def chunks(*sizes: int) -> Receive:
    messages: list[Message] = [
        {"type": "http.request", "body": b"x" * size, "more_body": n < len(sizes) - 1}
        for n, size in enumerate(sizes)
    ]

    async def receive() -> Message:
        return messages.pop(0)

    return receive


async def test_streamed_body_past_the_limit_is_refused() -> None:
    half = MAX_BODY_BYTES // 2 + 1
    with pytest.raises(BodyTooLarge):
        await read_request(scope([]), chunks(half, half))


async def test_streamed_body_within_the_limit_is_joined() -> None:
    request = await read_request(scope([(b"Authorization", b"Bearer t0k")]), chunks(3, 4))
    assert (request.body, request.bearer_token(), request.query) == (b"x" * 7, "t0k", {"a": ["1"]})


async def test_a_tighter_limit_is_kept_from_the_declared_length_and_while_reading() -> None:
    declared = scope([(b"content-length", b"16385")])
    with pytest.raises(BodyTooLarge):
        await read_request(declared, chunks(), max_body_bytes=16384)  # nothing read
    with pytest.raises(BodyTooLarge):
        await read_request(scope([]), chunks(10_000, 10_000), max_body_bytes=16384)
    request = await read_request(scope([]), chunks(16384), max_body_bytes=16384)
    assert len(request.body) == 16384


async def test_the_path_is_taken_as_the_server_decoded_it_not_decoded_again() -> None:
    # Hypercorn has already turned "/admin/calls/CA%252D" into "/admin/calls/CA%2D".
    request = await read_request(scope([]) | {"path": "/admin/calls/CA%2D"}, chunks(0))
    assert request.path == "/admin/calls/CA%2D"
