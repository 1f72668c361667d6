"""How each store record becomes rows: SQL and row conversion, asyncio-side.

Every write is idempotent, so a batch retried after a timeout, or replayed from the
spool after a crash, leaves the same rows as if it had been written once:

* ``event_log`` and ``function_calls``: inserts keyed by the record's own id, ``ON
  CONFLICT DO NOTHING``.
* ``calls``: an upsert keyed by call_sid that *merges* by the rules next to
  ``_upsert_call_sql``, so that updates from the call bridge, the status callback and the
  stream end give the same row in any order, and applying one twice changes nothing.

PostgreSQL's ``text`` and ``jsonb`` cannot hold U+0000 and refuse the whole statement
for one, so a NUL anywhere in a record (a caller's number, a model's transcript, a
function's arguments) would lose the call's record: every text value, and every string
inside a JSON value before it is encoded, has its NULs replaced by U+FFFD here, where
all rows are made (``engine/safe_text.py without_nul``).

Every value is bounded here too, so no record is refused for its size: text beyond its
column's bound is cut (with a marked end), a JSON value beyond its bound is replaced by
its cut text under ``{"truncated": true}``. A key (a CallSid, a project id) is never cut,
since a cut key would merge into another call's row: one too long to be a key is refused
(``RecordRefused``) and set aside by the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from actors.store.write_errors import RecordRefused
from engine.messages import CallUpdated, EventLogWritten, FunctionCallRecorded
from engine.safe_text import without_nul
from engine.vapi_messages import VAPI_KEY_PREFIX

if TYPE_CHECKING:
    from actors.store.db import Connection
    from engine.messages import StoreWrite

_json = msgspec.json.Encoder(enc_hook=str)

INSERT_EVENT = """
INSERT INTO event_log (id, ts, level, type, project_id, call_sid, message, metadata)
VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8::jsonb)
ON CONFLICT (id) DO NOTHING
"""

INSERT_FUNCTION_CALL = """
INSERT INTO function_calls
    (id, call_sid, project_id, name, arguments, outcome, http_status, latency_ms, error, at)
VALUES ($1::uuid, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10)
ON CONFLICT (id) DO NOTHING
"""

_CALL_COLUMNS = (
    "call_sid", "project_id", "from_number", "to_number", "status", "status_source",
    "status_rank", "intent",
    "end_reason", "error", "started_at", "answered_at", "ended_at", "duration_s", "transcript",
    "usage", "cost_usd", "time_to_first_audio_ms", "stream_sid", "engine_instance",
    "twilio_status", "twilio_duration_s", "system", "vapi_call_id", "summary", "vapi_fallback",
)  # fmt: skip

# How a call's row merges updates, so that the result does not depend on their order:
# * the status with the higher rank wins (failed > missed > completed > active); at equal
#   rank the engine's word beats Twilio's; an update that does not win only fills fields
#   the row does not have yet, so a row never says "completed" with another update's error;
# * started_at and answered_at keep the earliest time reported;
# * intent keeps the most urgent (emergency > routine > unknown);
# * the call's identity (project, numbers, system, Vapi's call id, why Vapi did not take
#   it) keeps its first value;
# * engine_instance (the process whose lease covers the live call, leases.py) follows the
#   stream: the instance that took the media stream (routing.py claim_stream, or an update
#   with the stream_sid) replaces the one that answered the webhook (they differ behind a
#   balancer, or between workers), and an update that knows no stream never replaces it;
# * a row the lease sweep finalised ('failed', engine_lost: a guess, the instance went
#   silent) ranks as ENGINE_LOST_RANK below: above any 'active', so a replayed spool does
#   not revive it; equal to Twilio's 'completed', so the status callback that follows
#   only fills in twilio_status and twilio_duration_s; below the engine's own final word,
#   which replaces the guess (an instance cut off from the database, not dead).
# Two updates that both lose to a third and give the same field different values (which
# the bridge and Twilio never do: each field has one reporter) are settled by arrival.
_STATUS_RANK = {"active": 0, "completed": 1, "missed": 2, "failed": 3}
# Vapi's report on a call it answered is that call's own word, as the engine's is here.
_SOURCE_RANK = {"twilio": 0, "engine": 1, "vapi": 1}
_WINS = "(EXCLUDED.status_rank > calls.status_rank)"
_IDENTITY = ("project_id", "from_number", "to_number", "system", "vapi_call_id", "vapi_fallback")
_EARLIEST = ("started_at", "answered_at")
_OUTCOME = (
    "end_reason", "error", "ended_at", "duration_s", "transcript", "usage", "cost_usd",
    "time_to_first_audio_ms", "stream_sid", "twilio_status", "twilio_duration_s", "summary",
)  # fmt: skip
# An update that knows the stream while the row does not yet: the instance that took it;
# and one that knows none, for a row whose stream an instance has.
_TAKES_STREAM = "(calls.stream_sid IS NULL AND EXCLUDED.stream_sid IS NOT NULL)"
_KNOWS_NO_STREAM = "(calls.stream_sid IS NOT NULL AND EXCLUDED.stream_sid IS NULL)"
ENGINE_LOST_RANK = _STATUS_RANK["completed"] * 2 + _SOURCE_RANK["twilio"]
_URGENCY = "CASE {0} WHEN 'emergency' THEN 2 WHEN 'routine' THEN 1 ELSE 0 END"


def _upsert_call_sql(*, by_vapi_id: bool = False) -> str:
    values = [
        f"${n}::jsonb" if column in ("transcript", "usage") else f"${n}"
        for n, column in enumerate(_CALL_COLUMNS, start=1)
    ]
    if by_vapi_id:
        # A Vapi message that named no CallSid (key "vapi:<id>"): the row that carries
        # that Vapi call id (the voice webhook's, under Twilio's CallSid) if there is one,
        # found here in the write rather than by a read in the request path; else its
        # own row. (A report whose call's webhook record is still spooled on another
        # instance then makes a second row: both say system vapi and the same call id.)
        vapi_id = f"${_CALL_COLUMNS.index('vapi_call_id') + 1}"
        values[0] = (  # constants only, never input (the value is the placeholder)
            "COALESCE((SELECT known.call_sid FROM calls AS known "  # noqa: S608
            f"WHERE known.vapi_call_id = {vapi_id} AND known.call_sid NOT LIKE "
            f"'{VAPI_KEY_PREFIX}%' ORDER BY known.started_at LIMIT 1), $1)"
        )
    placeholders = ", ".join(values)
    merges = [f"{c} = COALESCE(calls.{c}, EXCLUDED.{c})" for c in _IDENTITY]
    merges += [f"{c} = LEAST(calls.{c}, EXCLUDED.{c})" for c in _EARLIEST]
    merges += [
        f"{c} = CASE WHEN {_WINS} THEN COALESCE(EXCLUDED.{c}, calls.{c}) "
        f"ELSE COALESCE(calls.{c}, EXCLUDED.{c}) END"
        for c in _OUTCOME
    ]
    merges.append(
        f"engine_instance = CASE WHEN {_KNOWS_NO_STREAM} "
        "THEN COALESCE(calls.engine_instance, EXCLUDED.engine_instance) "
        f"WHEN {_WINS} OR {_TAKES_STREAM} "
        "THEN COALESCE(EXCLUDED.engine_instance, calls.engine_instance) "
        "ELSE COALESCE(calls.engine_instance, EXCLUDED.engine_instance) END"
    )
    merges += [
        f"status = CASE WHEN {_WINS} THEN EXCLUDED.status ELSE calls.status END",
        f"status_source = CASE WHEN {_WINS} THEN EXCLUDED.status_source "
        "ELSE calls.status_source END",
        "status_rank = GREATEST(calls.status_rank, EXCLUDED.status_rank)",
        f"intent = CASE WHEN ({_URGENCY.format('EXCLUDED.intent')}) > "
        f"({_URGENCY.format('calls.intent')}) THEN EXCLUDED.intent ELSE calls.intent END",
        "updated_at = now()",
    ]
    return (
        # Built only from the constants above, never from input.
        f"INSERT INTO calls ({', '.join(_CALL_COLUMNS)}) VALUES ({placeholders}) "  # noqa: S608
        f"ON CONFLICT (call_sid) DO UPDATE SET {', '.join(merges)}"
    )


UPSERT_CALL = _upsert_call_sql()
UPSERT_CALL_BY_VAPI_ID = _upsert_call_sql(by_vapi_id=True)


# Bounds, in characters. Keys: Twilio's SIDs are 34; ours are short slugs and UUIDs.
KEY_MAX = 64
TEXT_MAX = {"short": 256, "message": 8000, "error": 4000}
JSON_MAX = {"transcript": 1 << 20, "usage": 16 << 10, "arguments": 64 << 10,
            "metadata": 64 << 10}  # fmt: skip
CUT_MARK = " [...]"


def _key(name: str, value: str | None) -> str | None:
    if value is not None and len(value) > KEY_MAX:
        raise RecordRefused(f"{name} is {len(value)} characters: over {KEY_MAX}, not a key")
    return value


def _text(value: str | None, kind: str = "short") -> str | None:
    limit = TEXT_MAX[kind]
    if value is None or len(value) <= limit:
        return value
    return value[: limit - len(CUT_MARK)] + CUT_MARK


def _storable(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(without_nul(value) for value in row)


def _json_text(value: Any, kind: str = "metadata") -> str:
    text = _json.encode(without_nul(value)).decode()  # before encoding: "\u0000" is refused too
    limit = JSON_MAX[kind]
    if len(text) <= limit:
        return text
    return _json.encode({"truncated": True, "text": text[: limit - 64]}).decode()


def event_row(record: EventLogWritten) -> tuple[Any, ...]:
    return _storable((
        _key("event id", record.event_id),
        record.timestamp,
        _text(record.level),
        _text(record.type),
        _key("project_id", record.project_id),
        _key("call_sid", record.call_sid),
        _text(record.message, "message"),
        _json_text(record.metadata),
    ))  # fmt: skip


def call_row(record: CallUpdated) -> tuple[Any, ...]:
    values: dict[str, Any] = {c: getattr(record, c, None) for c in _CALL_COLUMNS}
    # A new row needs a status; an existing one keeps its own unless this one may win.
    values["status"] = record.status or "active"
    values["status_source"] = record.source
    # Status first, source second: one number the merge compares (see _WINS).
    values["status_rank"] = _STATUS_RANK[values["status"]] * 2 + _SOURCE_RANK[record.source]
    values["intent"] = record.intent or "unknown"
    for column in ("call_sid", "project_id", "stream_sid", "vapi_call_id"):
        values[column] = _key(column, values[column])
    for column in ("from_number", "to_number", "end_reason", "engine_instance", "twilio_status"):
        values[column] = _text(values[column])
    values["error"] = _text(values["error"], "error")
    values["summary"] = _text(values["summary"], "message")
    values["vapi_fallback"] = _text(values["vapi_fallback"])
    for column in ("transcript", "usage"):
        value = values[column]
        values[column] = None if value is None else _json_text(value, column)
    return _storable(tuple(values[c] for c in _CALL_COLUMNS))


def function_call_row(record: FunctionCallRecorded) -> tuple[Any, ...]:
    return _storable((
        _key("function call id", record.id),
        _key("call_sid", record.call_sid),
        _key("project_id", record.project_id),
        _text(record.name),
        _json_text(record.arguments, "arguments"),
        record.outcome,
        record.http_status,
        record.latency_ms,
        _text(record.error, "error"),
        record.at,
    ))  # fmt: skip


def _by_vapi_id(record: CallUpdated) -> bool:
    return record.vapi_call_id is not None and record.call_sid.startswith(VAPI_KEY_PREFIX)


async def write_records(connection: Connection, records: list[StoreWrite]) -> None:
    """Write a batch inside the caller's transaction: one ``executemany`` per table. Call
    updates keep their order, which matters for none of the merge rules but keeps the
    row's ``updated_at`` history honest."""
    events = [event_row(r) for r in records if isinstance(r, EventLogWritten)]
    updates = [r for r in records if isinstance(r, CallUpdated)]
    calls = [call_row(r) for r in updates if not _by_vapi_id(r)]
    # After the others: a row this batch creates for the Vapi call id is found.
    by_vapi_id = [call_row(r) for r in updates if _by_vapi_id(r)]
    functions = [function_call_row(r) for r in records if isinstance(r, FunctionCallRecorded)]
    if events:
        await connection.executemany(INSERT_EVENT, events)
    if calls:
        await connection.executemany(UPSERT_CALL, calls)
    if by_vapi_id:
        await connection.executemany(UPSERT_CALL_BY_VAPI_ID, by_vapi_id)
    if functions:
        await connection.executemany(INSERT_FUNCTION_CALL, functions)
