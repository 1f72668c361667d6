"""Calling a business's own functions (``get_slots``, ``book_appointment``...).

``POST function_url`` with ``{"name", "arguments", "call_sid", "project_id"}`` as JSON,
signed with HMAC-SHA256 of the body under the project's ``function_secret`` (header
``X-Afterhours-Signature: sha256=<hex>``), within the project's ``function_timeout_s``.
Whatever happens, the model gets a string to read: the backend's JSON, or a clear error
object it can explain to the caller (non-2xx, timeout, unreachable, not JSON).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import httpx
import msgspec
import trio

from engine.signing import sign

if TYPE_CHECKING:
    from engine.projects import Project

SIGNATURE_HEADER = "X-Afterhours-Signature"
MAX_RESULT_BYTES = 64 * 1024  # what the model reads back must stay small

_json = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class FunctionResult:
    output: str  # what goes back to the model as the function_call_output
    outcome: Literal["ok", "error", "timeout"]
    http_status: int | None
    latency_ms: int
    error: str | None


async def call_function(
    client: httpx.AsyncClient, project: Project, name: str, arguments: Any, call_sid: str
) -> FunctionResult:
    body = _json.encode(
        {"name": name, "arguments": arguments, "call_sid": call_sid, "project_id": project.id}
    )
    headers = {"Content-Type": "application/json"}
    if project.function_secret:
        headers[SIGNATURE_HEADER] = sign(project.function_secret, body)
    started_s = trio.current_time()

    def result(outcome: Literal["ok", "error", "timeout"], output: Any, status: int | None,
               error: str | None) -> FunctionResult:  # fmt: skip
        latency_ms = int((trio.current_time() - started_s) * 1000)
        return FunctionResult(_json.encode(output).decode(), outcome, status, latency_ms, error)

    if not project.function_url:
        return result(
            "error", {"error": "this business has no function backend"}, None, "no function_url"
        )
    too_large = False
    with trio.move_on_after(project.function_timeout_s) as deadline:
        try:
            # Streamed, and kept only up to the bound: a backend that answers gigabytes
            # (a bug, or a hostile tenant) costs this call 64 KiB of memory, not the
            # process's; the rest is read and dropped until the deadline (leaving the
            # stream half-read would leak httpcore's generators).
            async with client.stream(
                "POST", project.function_url, content=body, headers=headers
            ) as response:
                content = bytearray()
                async for chunk in response.aiter_bytes():
                    if not too_large:
                        content += chunk
                        too_large = len(content) > MAX_RESULT_BYTES
                if too_large:
                    content.clear()
        except httpx.HTTPError as exc:
            message = f"the booking system could not be reached ({type(exc).__name__})"
            return result("error", {"error": message}, None, f"{type(exc).__name__}: {exc}")
    if deadline.cancelled_caught:
        message = f"the booking system did not answer within {project.function_timeout_s:g} s"
        return result("timeout", {"error": message}, None, "timeout")
    if not 200 <= response.status_code < 300:
        message = f"the booking system failed (HTTP {response.status_code})"
        return result("error", {"error": message}, response.status_code, message)
    if too_large:
        message = f"the booking system answered more than {MAX_RESULT_BYTES // 1024} KiB"
        return result("error", {"error": message}, response.status_code, message)
    try:
        data = msgspec.json.decode(bytes(content))
    except msgspec.DecodeError:
        message = "the booking system answered something that is not JSON"
        return result("error", {"error": message}, response.status_code, message)
    return result("ok", data, response.status_code, None)
