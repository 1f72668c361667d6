"""The routing tables as call setup needs them: the snapshot's loader, its version, and
the stream token's single use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from actors.store.admin import project_from_row
from engine.routing import NumberRoute, RoutingSnapshot

if TYPE_CHECKING:
    from actors.store.db import Connection


async def claim_stream(
    connection: Connection,
    call_sid: str,
    stream_sid: str,
    project_id: str,
    engine_instance: str | None = None,
) -> bool:
    """Bind the call to this media stream, once: the stream token's single use, shared by
    every engine instance (the stream may reach another instance than the webhook did,
    and arrive before the webhook's own record is written: the row is created if need be).
    The claiming instance is the call's from here: its lease covers the row (leases.py).
    False when the call already has a stream."""
    claimed = await connection.fetchval(
        "INSERT INTO calls (call_sid, project_id, stream_sid, engine_instance) "
        "VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (call_sid) DO UPDATE SET stream_sid = EXCLUDED.stream_sid, "
        "engine_instance = COALESCE(EXCLUDED.engine_instance, calls.engine_instance) "
        "WHERE calls.stream_sid IS NULL RETURNING 1",
        call_sid,
        project_id,
        stream_sid,
        engine_instance,
    )
    return claimed is not None


async def routing_version(connection: Connection) -> int:
    """The routing tables' version: bumped by a trigger on every change (migration 0005)."""
    version: int = await connection.fetchval("SELECT version FROM routing_version")
    return version


async def load_snapshot(connection: Connection) -> RoutingSnapshot:
    """Every project, number and live key hash, with the version read first: a change
    committed while this reads bumps the version again, so it is loaded next time."""
    version = await routing_version(connection)
    projects = {
        row["id"]: project_from_row(row) for row in await connection.fetch("SELECT * FROM projects")
    }
    numbers = {
        row["number"]: NumberRoute(
            row["number"],
            row["project_id"],
            row["system"],
            projects[row["project_id"]].on_call_number,
            row["vapi_phone_number_id"],
            row["vapi_assistant_id"],
        )
        for row in await connection.fetch(
            "SELECT number, project_id, system, vapi_phone_number_id, vapi_assistant_id "
            "FROM phone_numbers"
        )
        if row["project_id"] in projects
    }
    keys = await connection.fetch(
        "SELECT key_hash, project_id FROM api_keys WHERE revoked_at IS NULL"
    )
    key_projects = {row["key_hash"]: row["project_id"] for row in keys}
    return RoutingSnapshot.of(version, numbers, projects, key_projects)
