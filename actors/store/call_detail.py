"""One call as its project's readers see it (``GET /analytics/project/{id}/calls/{sid}``):
the operator's record of it (``call_record.get_call``: the row and its business function
calls in the order made, scrubbed of the project's secrets) in the analytics API's
shape, without what only operators need (the engine instance, the stream, usage).

A call of another project is not found in the same words as a call that never was, so a
key for one project cannot learn that a call of another exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors.store.call_record import get_call
from engine.json_case import camel_keys
from engine.store_queries import CallNotFound, NotFound

if TYPE_CHECKING:
    from actors.store.db import Connection


async def call_detail(connection: Connection, project_id: str, call_sid: str) -> dict[str, Any]:
    missing = CallNotFound(f"no call {call_sid!r} in project {project_id!r}")
    try:
        call = await get_call(connection, call_sid)
    except NotFound:
        raise missing from None
    if call["project_id"] != project_id:
        raise missing
    return {
        "projectId": project_id,
        "callSid": call["call_sid"],
        "from": call["from_number"],
        "to": call["to_number"],
        "system": call["system"],
        "vapiCallId": call["vapi_call_id"],
        "status": call["status"],
        "intent": call["intent"],
        "endReason": call["end_reason"],
        "error": call["error"],
        "startedAt": call["started_at"],
        "answeredAt": call["answered_at"],
        "endedAt": call["ended_at"],
        "durationS": _round(call["duration_s"], 1),
        "costUsd": _round(call["cost_usd"], 6),
        "timeToFirstAudioMs": call["time_to_first_audio_ms"],
        # Turns as recorded ({role, text, offset_ms}), in the API's casing.
        "transcript": camel_keys(call["transcript"] or []),
        "summary": call["summary"],
        "functionCalls": [
            {
                "name": f["name"],
                "arguments": f["arguments"],
                "outcome": f["outcome"],
                "httpStatus": f["http_status"],
                "latencyMs": f["latency_ms"],
                "error": f["error"],
                "at": f["at"],
            }
            for f in call["function_calls"]
        ],
        "functionCallsTotal": call["function_calls_total"],
    }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
