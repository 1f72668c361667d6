"""One call's record for operators (``GET /admin/calls/{sid}``, ``afterhours call show``):
the call's row and its business function calls, as a store query.

The function calls are listed in the order they were made, at most ``FUNCTION_CALLS_SHOWN`` of them
(``function_calls_total`` says how many there were). Their arguments are what the model
sent, never a secret of ours, and the error texts are the engine's own; still, each is
scrubbed here of the project's function secret, the parts of its function URL that may
carry a credential (a password, the query string) and anything shaped like the request
signature (``sha256=`` and 64 hex digits), so that no route prints one whatever a model,
a backend or an exception put into a record, including records written before this.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec

from engine.store_queries import NotFound

if TYPE_CHECKING:
    from actors.store.db import Connection

# A call of the longest allowed length (2 h) that called a function every half minute
# is 240 calls; 200 is past any conversation a caller sits through, and bounds the answer
# (each call's arguments are at most 64 KiB: actors/store/writes.py).
FUNCTION_CALLS_SHOWN = 200
REDACTED = "[redacted]"
_SIGNATURE = re.compile(r"sha256=[0-9a-fA-F]{64}")

_CALL_COLUMNS = (
    "call_sid, project_id, from_number, to_number, status, status_source, intent, "
    "end_reason, error, started_at, answered_at, ended_at, duration_s, transcript, usage, "
    "cost_usd, time_to_first_audio_ms, stream_sid, engine_instance, twilio_status, "
    "twilio_duration_s, system, vapi_call_id, vapi_fallback, summary"
)
_FUNCTION_COLUMNS = "name, arguments, outcome, http_status, latency_ms, error, at"


async def get_call(connection: Connection, call_sid: str) -> dict[str, Any]:
    """One call's record as JSON-ready values, with its function calls."""
    row = await connection.fetchrow(
        f"SELECT {_CALL_COLUMNS} FROM calls WHERE call_sid = $1",  # noqa: S608 -- constant columns
        call_sid,
    )
    if row is None:
        raise NotFound(f"no call {call_sid!r}")
    call = dict(row)
    for key in ("transcript", "usage"):
        call[key] = msgspec.json.decode(call[key]) if call[key] is not None else None
    for key in ("started_at", "answered_at", "ended_at"):
        call[key] = call[key].isoformat() if call[key] is not None else None
    call["cost_usd"] = float(call["cost_usd"]) if call["cost_usd"] is not None else None
    # A row made before its webhook's record (a status callback first) has no system
    # yet; before Vapi this engine was the only one (migration 0009).
    call["system"] = call["system"] or "openai"
    call["function_calls"], call["function_calls_total"] = await _function_calls(
        connection, call_sid, await _secrets(connection, call["project_id"])
    )
    return call


async def _function_calls(
    connection: Connection, call_sid: str, secrets: list[str]
) -> tuple[list[dict[str, Any]], int]:
    rows = await connection.fetch(
        f"SELECT {_FUNCTION_COLUMNS}, count(*) OVER () AS total "  # noqa: S608 -- constants
        # In the order they were made: ``at`` is when each finished (a slow one ends
        # after a quicker one made later).
        "FROM function_calls WHERE call_sid = $1 "
        "ORDER BY at - make_interval(secs => latency_ms / 1000.0), id LIMIT $2",
        call_sid,
        FUNCTION_CALLS_SHOWN,
    )
    shown = []
    for row in rows:
        function_call = {column: row[column] for column in _FUNCTION_COLUMNS.split(", ")}
        function_call["arguments"] = msgspec.json.decode(row["arguments"])
        function_call["at"] = row["at"].isoformat()
        shown.append(scrubbed(function_call, secrets))
    return shown, rows[0]["total"] if rows else 0


async def _secrets(connection: Connection, project_id: str | None) -> list[str]:
    """What of the project's configuration must never be shown (its calls outlive it:
    a deleted project leaves only the signature pattern to scrub)."""
    if project_id is None:
        return []
    row = await connection.fetchrow(
        "SELECT function_secret, function_url FROM projects WHERE id = $1", project_id
    )
    if row is None:
        return []
    found = [row["function_secret"]] if row["function_secret"] else []
    if row["function_url"]:
        url = urlsplit(row["function_url"])
        found += [part for part in (url.password, url.query) if part]
    # The longest first: a secret that contains another is replaced whole.
    return sorted(set(found), key=len, reverse=True)


def scrubbed(value: Any, secrets: list[str]) -> Any:
    """``value`` (JSON: keys and strings at any depth) with every secret and every
    signature-shaped text replaced by ``[redacted]``."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return _SIGNATURE.sub(f"sha256={REDACTED}", value)
    if isinstance(value, list):
        return [scrubbed(item, secrets) for item in value]
    if isinstance(value, dict):
        return {scrubbed(k, secrets): scrubbed(v, secrets) for k, v in value.items()}
    return value
