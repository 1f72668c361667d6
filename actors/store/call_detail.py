"""One call as its project's readers see it (``GET /analytics/project/{id}/calls/{sid}``):
its record and the business functions the model called during it, in order.

The call is looked up by CallSid *and* project, so a key for one project cannot learn
that a call of another exists: both are simply not found.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from actors.store.db import Connection

# A call's functions are bounded by its length (MAX_CALL_S) and the model's pace; this
# caps what one read returns should a runaway model have called one in a loop.
MAX_FUNCTION_CALLS = 500

_CALL = """
SELECT call_sid, from_number, to_number, status, intent, end_reason, error,
    coalesce(system, 'openai') AS system, vapi_call_id, started_at, answered_at, ended_at,
    duration_s, cost_usd, time_to_first_audio_ms, transcript, summary
FROM calls
WHERE call_sid = $1 AND project_id = $2
"""

_FUNCTIONS = """
SELECT name, arguments, outcome, http_status, latency_ms, error, at
FROM function_calls
WHERE call_sid = $1
ORDER BY at, id
LIMIT $2
"""


class CallNotFound(LookupError):
    pass


async def call_detail(connection: Connection, project_id: str, call_sid: str) -> dict[str, Any]:
    row = await connection.fetchrow(_CALL, call_sid, project_id)
    if row is None:
        raise CallNotFound(f"no call {call_sid!r} in project {project_id!r}")
    functions = await connection.fetch(_FUNCTIONS, call_sid, MAX_FUNCTION_CALLS)
    return {
        "projectId": project_id,
        "callSid": row["call_sid"],
        "from": row["from_number"],
        "to": row["to_number"],
        "system": row["system"],
        "vapiCallId": row["vapi_call_id"],
        "status": row["status"],
        "intent": row["intent"],
        "endReason": row["end_reason"],
        "error": row["error"],
        "startedAt": _time(row["started_at"]),
        "answeredAt": _time(row["answered_at"]),
        "endedAt": _time(row["ended_at"]),
        "durationS": _number(row["duration_s"], 1),
        "costUsd": _number(row["cost_usd"], 6),
        "timeToFirstAudioMs": row["time_to_first_audio_ms"],
        "transcript": _json(row["transcript"]) or [],
        "summary": row["summary"],
        "functionCalls": [
            {
                "name": f["name"],
                "arguments": _json(f["arguments"]),
                "outcome": f["outcome"],
                "httpStatus": f["http_status"],
                "latencyMs": f["latency_ms"],
                "error": f["error"],
                "at": _time(f["at"]),
            }
            for f in functions
        ],
    }


def _json(value: str | None) -> Any:
    return msgspec.json.decode(value) if value is not None else None


def _time(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _number(value: Any, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)
