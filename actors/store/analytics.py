"""The analytics reads, run on the store's query lane (one transaction each).

Every query is bounded to one project and a time range, and served by the
``calls_project_started_cover`` index on ``(project_id, started_at, call_sid)``, which
also carries the columns the aggregates read, so large windows are index-only scans
(migration 0003; ``bench/analytics.py`` prints the plans). The split by system (this
engine or Vapi) reads ``calls.system`` too, which that index does not carry: those two
queries visit the rows of the window. Days are the project's local days: a call's day is
``(started_at AT TIME ZONE tz)::date``, and the day series is zero-filled.

A call's system is NULL until the webhook's record lands (a status callback can create
the row first) and for every call before Vapi existed: it counts as ``openai``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from actors.store.db import Connection
    from engine.analytics_params import Cursor, Window

PREVIEW_CHARS = 160
PREVIEW_TURNS = 3

_STATUS_COUNTS = """
    count(*) FILTER (WHERE status = 'completed') AS completed,
    count(*) FILTER (WHERE status = 'missed') AS missed,
    count(*) FILTER (WHERE status = 'failed') AS failed,
    count(*) FILTER (WHERE status = 'active') AS active,
    count(*) FILTER (WHERE intent = 'emergency') AS emergency,
    count(*) FILTER (WHERE intent = 'routine') AS routine,
    count(*) FILTER (WHERE intent = 'unknown') AS unknown,
    coalesce(sum(duration_s) FILTER (WHERE status <> 'active'), 0) AS duration_total_s,
    coalesce(sum(cost_usd) FILTER (WHERE status <> 'active'), 0) AS cost_ended_usd,
    avg(duration_s) FILTER (WHERE status <> 'active') AS duration_avg_s,
    coalesce(sum(cost_usd), 0) AS cost_total_usd
"""

# Built from constant fragments only; every value is a bind parameter.
_SUMMARY = f"""
SELECT count(*) AS total, {_STATUS_COUNTS},
    avg(cost_usd) AS cost_avg_usd,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY time_to_first_audio_ms) AS ttfa_p50,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY time_to_first_audio_ms) AS ttfa_p95
FROM calls
WHERE project_id = $1 AND started_at >= $2 AND started_at < $3
"""  # noqa: S608

_DAILY = f"""
WITH per_day AS (
    SELECT (started_at AT TIME ZONE $4)::date AS day, count(*) AS total, {_STATUS_COUNTS}
    FROM calls
    WHERE project_id = $1 AND started_at >= $2 AND started_at < $3
    GROUP BY 1
)
SELECT days.day::date AS day, coalesce(p.total, 0) AS total,
    coalesce(p.completed, 0) AS completed, coalesce(p.missed, 0) AS missed,
    coalesce(p.failed, 0) AS failed, coalesce(p.active, 0) AS active,
    coalesce(p.emergency, 0) AS emergency, coalesce(p.routine, 0) AS routine,
    coalesce(p.unknown, 0) AS unknown,
    coalesce(p.duration_total_s, 0) AS duration_total_s, p.duration_avg_s,
    coalesce(p.cost_total_usd, 0) AS cost_total_usd
FROM generate_series($5::date, $6::date, interval '1 day') AS days (day)
LEFT JOIN per_day AS p ON p.day = days.day::date
ORDER BY days.day
"""  # noqa: S608

SYSTEMS = ("openai", "vapi")
_SYSTEM = "coalesce(system, 'openai')"

_BY_SYSTEM = f"""
SELECT {_SYSTEM} AS system, count(*) AS total, {_STATUS_COUNTS}
FROM calls
WHERE project_id = $1 AND started_at >= $2 AND started_at < $3
GROUP BY 1
"""  # noqa: S608

_DAILY_BY_SYSTEM = f"""
SELECT (started_at AT TIME ZONE $4)::date AS day, {_SYSTEM} AS system, count(*) AS total,
    {_STATUS_COUNTS}
FROM calls
WHERE project_id = $1 AND started_at >= $2 AND started_at < $3
GROUP BY 1, 2
"""  # noqa: S608

_FUNCTIONS = """
SELECT count(*) AS total, count(*) FILTER (WHERE outcome IN ('error', 'timeout')) AS failed,
    count(*) FILTER (WHERE outcome = 'cancelled') AS cancelled
FROM function_calls
WHERE project_id = $1 AND at >= $2 AND at < $3
"""

_RECENT = f"""
SELECT call_sid, from_number, status, intent, end_reason, {_SYSTEM} AS system, started_at,
    duration_s, cost_usd,
    jsonb_path_query_array(transcript, '$[0 to 2]') AS first_turns
FROM calls
WHERE project_id = $1 AND started_at IS NOT NULL
    AND ($2::timestamptz IS NULL OR (started_at, call_sid) < ($2::timestamptz, $3::text))
ORDER BY started_at DESC, call_sid DESC
LIMIT $4
"""  # noqa: S608


async def summary(
    connection: Connection,
    project_id: str,
    window: Window,
    comparison_rate_per_min_usd: float | None = None,
) -> dict[str, Any]:
    row = await connection.fetchrow(_SUMMARY, project_id, window.start, window.end)
    assert row is not None
    functions = await connection.fetchrow(_FUNCTIONS, project_id, window.start, window.end)
    assert functions is not None
    days = await _days(connection, project_id, window)
    systems = await connection.fetch(_BY_SYSTEM, project_id, window.start, window.end)
    numbers = await connection.fetch(
        "SELECT number, system FROM phone_numbers WHERE project_id = $1 ORDER BY number",
        project_id,
    )
    ended = row["completed"] + row["missed"] + row["failed"]
    minutes = _minutes(row)
    return {
        "projectId": project_id,
        "from": window.start.isoformat(),
        "to": window.end.isoformat(),
        "timezone": window.timezone,
        "totalCalls": row["total"],
        "completed": row["completed"],
        "missed": row["missed"],
        "failed": row["failed"],
        "active": row["active"],
        "averageDurationS": _round(row["duration_avg_s"], 1),
        "errorRate": round(row["failed"] / ended, 4) if ended else 0.0,
        "callsByStatus": _by_status(row),
        "callsByIntent": _by_intent(row),
        "daily": [_day_brief(day) for day in days],
        "totalCostUsd": _round(row["cost_total_usd"], 6),
        "averageCostUsd": _round(row["cost_avg_usd"], 6),
        "functionCalls": {
            "total": functions["total"],
            "failed": functions["failed"],
            "failureRate": round(functions["failed"] / functions["total"], 4)
            if functions["total"]
            else 0.0,
        },
        "timeToFirstAudioMs": {
            "p50": _round(row["ttfa_p50"], 1),
            "p95": _round(row["ttfa_p95"], 1),
        },
        "phoneNumbers": [{"number": n["number"], "system": n["system"]} for n in numbers],
        # Cost per minute of talk: ended calls' cost over their minutes, beside the other
        # system's configured rate (COMPARISON_RATE_PER_MIN_USD) when there is one.
        "minutes": round(minutes, 2),
        "costPerMinuteUsd": _per_minute(row),
        "comparisonRatePerMinuteUsd": comparison_rate_per_min_usd,
        # The same figures for each system on its own, measured from its calls' records.
        "bySystem": _per_system(systems, _system_figures, _NO_CALLS),
    }


async def daily(connection: Connection, project_id: str, window: Window) -> dict[str, Any]:
    return {
        "projectId": project_id,
        "start": window.first_day.isoformat(),
        "end": window.last_day.isoformat(),
        "timezone": window.timezone,
        "days": await _days(connection, project_id, window, by_system=True),
    }


async def recent(
    connection: Connection, project_id: str, limit: int, cursor: Cursor | None
) -> tuple[list[dict[str, Any]], tuple[datetime, str] | None]:
    """The ``limit`` latest calls before ``cursor``; the next cursor's key, if more."""
    rows = await connection.fetch(
        _RECENT,
        project_id,
        cursor.started_at if cursor else None,
        cursor.call_sid if cursor else "",
        limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    calls = [
        {
            "callSid": row["call_sid"],
            "from": row["from_number"],
            "status": row["status"],
            "intent": row["intent"],
            "endReason": row["end_reason"],
            "system": row["system"],
            "startedAt": row["started_at"].isoformat(),
            "durationS": _round(row["duration_s"], 1),
            "costUsd": _round(row["cost_usd"], 6),
            "transcriptPreview": _preview(row["first_turns"]),
        }
        for row in rows
    ]
    last = rows[-1] if rows else None
    following = (last["started_at"], last["call_sid"]) if more and last is not None else None
    return calls, following


async def _days(
    connection: Connection, project_id: str, window: Window, *, by_system: bool = False
) -> list[dict[str, Any]]:
    bounds = (project_id, window.start, window.end, window.timezone)
    rows = await connection.fetch(_DAILY, *bounds, window.first_day, window.last_day)
    days = [{"date": row["day"].isoformat(), **_day_figures(row)} for row in rows]
    if by_system:
        split: dict[str, list[Any]] = {}
        for row in await connection.fetch(_DAILY_BY_SYSTEM, *bounds):
            split.setdefault(row["day"].isoformat(), []).append(row)
        for day in days:
            day["bySystem"] = _per_system(split.get(day["date"], []), _day_figures, _NO_CALLS)
    return days


def _day_figures(row: Any) -> dict[str, Any]:
    return {
        "total": row["total"],
        "byStatus": _by_status(row),
        "byIntent": _by_intent(row),
        "durationTotalS": _round(row["duration_total_s"], 1),
        "durationAverageS": _round(row["duration_avg_s"], 1),
        "costUsd": _round(row["cost_total_usd"], 6),
    }


def _system_figures(row: Any) -> dict[str, Any]:
    return {
        "calls": row["total"],
        **_by_status(row),
        "minutes": round(_minutes(row), 2),
        "costUsd": _round(row["cost_total_usd"], 6),
        "costPerMinuteUsd": _per_minute(row),
        "averageDurationS": _round(row["duration_avg_s"], 1),
    }


def _per_system(
    rows: list[Any], figures: Callable[[Any], dict[str, Any]], empty: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """``figures`` of each system's row, every system present (``empty``: no calls)."""
    found = {row["system"]: figures(row) for row in rows}
    return {system: found.get(system, figures(empty)) for system in SYSTEMS}


# A system with no call in the window: the aggregates of no rows.
_NO_CALLS: dict[str, Any] = dict.fromkeys(
    ("total", "completed", "missed", "failed", "active", "emergency", "routine", "unknown",
     "duration_total_s", "cost_ended_usd", "cost_total_usd"), 0,
) | {"duration_avg_s": None}  # fmt: skip


def _minutes(row: Any) -> float:
    """Minutes of talk of the ended calls."""
    return float(row["duration_total_s"]) / 60


def _per_minute(row: Any) -> float | None:
    """Cost per minute of talk: ended calls' cost over their minutes."""
    minutes = _minutes(row)
    return round(float(row["cost_ended_usd"]) / minutes, 6) if minutes else None


def _day_brief(day: dict[str, Any]) -> dict[str, Any]:
    brief = {"date": day["date"], "total": day["total"], **day["byStatus"]}
    return brief | {"costUsd": day["costUsd"]}


def _by_status(row: Any) -> dict[str, int]:
    return {key: row[key] for key in ("completed", "missed", "failed", "active")}


def _by_intent(row: Any) -> dict[str, int]:
    return {key: row[key] for key in ("emergency", "routine", "unknown")}


def _round(value: Any, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def _preview(first_turns: str | None) -> str:
    if not first_turns:
        return ""
    turns = msgspec.json.decode(first_turns)
    text = " / ".join(
        f"{turn.get('role', '?')}: {turn.get('text', '')}"
        for turn in turns[:PREVIEW_TURNS]
        if isinstance(turn, dict)
    )
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"
