"""Which project answers a number: the voice webhook's one query, through the query lane."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from actors.store.db import Connection


class NumberRoute(msgspec.Struct, frozen=True):
    number: str
    project_id: str
    system: str  # "openai": answered here; "vapi": answered by another system
    on_call_number: str | None


async def claim_stream(
    connection: Connection, call_sid: str, stream_sid: str, project_id: str
) -> bool:
    """Bind the call to this media stream, once: the stream token's single use, shared by
    every engine instance (the stream may reach another instance than the webhook did,
    and arrive before the webhook's own record is written: the row is created if need be).
    False when the call already has a stream."""
    claimed = await connection.fetchval(
        "INSERT INTO calls (call_sid, project_id, stream_sid) VALUES ($1, $2, $3) "
        "ON CONFLICT (call_sid) DO UPDATE SET stream_sid = EXCLUDED.stream_sid "
        "WHERE calls.stream_sid IS NULL RETURNING 1",
        call_sid,
        project_id,
        stream_sid,
    )
    return claimed is not None


async def route_number(connection: Connection, number: str) -> NumberRoute | None:
    row = await connection.fetchrow(
        "SELECT n.number, n.project_id, n.system, p.on_call_number "
        "FROM phone_numbers n JOIN projects p ON p.id = n.project_id WHERE n.number = $1",
        number,
    )
    if row is None:
        return None
    return NumberRoute(row["number"], row["project_id"], row["system"], row["on_call_number"])
