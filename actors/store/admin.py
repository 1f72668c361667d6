"""Projects, phone numbers and API keys: the admin operations' SQL.

Each runs in the store's transaction for one admin query (engine/store_queries.py,
mapped here by handlers.py). Validation happens before, in the API (engine/projects.py),
or, for PATCH, inside the transaction, against the row locked for update, so two
concurrent patches cannot lose each other's change.

API keys: ``ahk_<key id>_<secret>``. Only the SHA-256 of the whole key is stored: the key
is 30+ random bytes, so a fast hash is enough, and the plain key is shown once.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

import msgspec

from engine.field_checks import FieldError, ValidationFailed
from engine.phone_numbers import PhoneNumber, patch_phone_number
from engine.projects import Project, patch_project
from engine.routing import hash_key
from engine.store_queries import Conflict, CreatedKey, NotFound

if TYPE_CHECKING:
    from collections.abc import Mapping

    import asyncpg

    from actors.store.db import Connection

_PROJECT_COLUMNS = (
    "id", "name", "timezone", "greeting", "instructions", "voice", "language", "tools",
    "function_url", "function_secret", "function_timeout_s", "on_call_number", "max_call_s",
    "silence_timeout_s", "vad_threshold", "vad_silence_ms", "vad_prefix_padding_ms", "model",
    "vapi_fallback",
)  # fmt: skip
_json = msgspec.json.Encoder()


def _project_values(project: Project) -> list[Any]:
    values = [getattr(project, column) for column in _PROJECT_COLUMNS]
    values[_PROJECT_COLUMNS.index("tools")] = _json.encode(project.tools).decode()
    return values


def project_from_row(row: asyncpg.Record) -> Project:
    data = {column: row[column] for column in _PROJECT_COLUMNS}
    data["tools"] = msgspec.json.decode(row["tools"]) if row["tools"] else []
    return msgspec.convert(data, Project)


NUMBER_COLUMNS = "number, project_id, system, vapi_phone_number_id, vapi_assistant_id"


def number_view(row: asyncpg.Record) -> dict[str, Any]:
    """A phone_numbers row as API output (Vapi's ids are identifiers, not secrets)."""
    return {column: row[column] for column in NUMBER_COLUMNS.split(", ")}


async def _numbers(connection: Connection, project_id: str) -> list[dict[str, Any]]:
    rows = await connection.fetch(
        f"SELECT {NUMBER_COLUMNS} FROM phone_numbers "  # noqa: S608 -- constant columns
        "WHERE project_id = $1 ORDER BY number",
        project_id,
    )
    return [number_view(row) for row in rows]


async def _view(connection: Connection, project: Project) -> dict[str, Any]:
    return project.public_dict() | {"phone_numbers": await _numbers(connection, project.id)}


async def _require_project(connection: Connection, project_id: str) -> None:
    if await connection.fetchval("SELECT 1 FROM projects WHERE id = $1", project_id) is None:
        raise NotFound(f"no project {project_id!r}")


async def get_project(connection: Connection, project_id: str) -> dict[str, Any]:
    row = await connection.fetchrow("SELECT * FROM projects WHERE id = $1", project_id)
    if row is None:
        raise NotFound(f"no project {project_id!r}")
    return await _view(connection, project_from_row(row))


async def list_projects(connection: Connection) -> list[dict[str, Any]]:
    rows = await connection.fetch("SELECT * FROM projects ORDER BY id")
    return [await _view(connection, project_from_row(row)) for row in rows]


async def create_project(connection: Connection, project: Project) -> dict[str, Any]:
    placeholders = ", ".join(f"${n}" for n in range(1, len(_PROJECT_COLUMNS) + 1))
    inserted = await connection.fetchval(
        f"INSERT INTO projects ({', '.join(_PROJECT_COLUMNS)}) VALUES ({placeholders}) "  # noqa: S608 - constants only
        "ON CONFLICT (id) DO NOTHING RETURNING id",
        *_project_values(project),
    )
    if inserted is None:
        raise Conflict(f"project {project.id!r} already exists; PUT or PATCH it instead")
    return await _view(connection, project)


async def put_project(
    connection: Connection, project: Project, *, keep_secret: bool = False
) -> tuple[dict[str, Any], bool]:
    """Create or replace; returns the project and whether it was created. The secret is
    write-only: with ``keep_secret`` (the body did not mention it) the stored one stays,
    so a configuration file that leaves secrets out does not erase them."""
    kept = {"function_secret"} if keep_secret else set()
    assignments = ", ".join(
        f"{c} = projects.{c}" if c in kept else f"{c} = EXCLUDED.{c}" for c in _PROJECT_COLUMNS[1:]
    )
    placeholders = ", ".join(f"${n}" for n in range(1, len(_PROJECT_COLUMNS) + 1))
    row = await connection.fetchrow(
        f"INSERT INTO projects ({', '.join(_PROJECT_COLUMNS)}) VALUES ({placeholders}) "  # noqa: S608 - constants only
        f"ON CONFLICT (id) DO UPDATE SET {assignments}, updated_at = now() "
        "RETURNING (xmax = 0) AS created, *",
        *_project_values(project),
    )
    assert row is not None  # an upsert always returns its row
    return await _view(connection, project_from_row(row)), bool(row["created"])


async def patch_project_row(
    connection: Connection, project_id: str, changes: Mapping[str, Any]
) -> dict[str, Any]:
    row = await connection.fetchrow("SELECT * FROM projects WHERE id = $1 FOR UPDATE", project_id)
    if row is None:
        raise NotFound(f"no project {project_id!r}")
    patched = patch_project(project_from_row(row), changes)
    view, _ = await put_project(connection, patched)
    return view


async def delete_project(connection: Connection, project_id: str) -> None:
    deleted = await connection.fetchval(
        "DELETE FROM projects WHERE id = $1 RETURNING id", project_id
    )
    if deleted is None:
        raise NotFound(f"no project {project_id!r}")


async def add_phone_number(
    connection: Connection, project_id: str, number: PhoneNumber
) -> dict[str, Any]:
    """Add ``number`` to the project, or (the project's own number) replace its system and
    Vapi ids; a number another project owns is refused."""
    await _require_project(connection, project_id)
    row = await connection.fetchrow(
        "INSERT INTO phone_numbers (number, project_id, system, vapi_phone_number_id, "  # noqa: S608
        "vapi_assistant_id) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (number) DO UPDATE SET system = EXCLUDED.system, "
        "vapi_phone_number_id = EXCLUDED.vapi_phone_number_id, "
        "vapi_assistant_id = EXCLUDED.vapi_assistant_id, updated_at = now() "
        "WHERE phone_numbers.project_id = EXCLUDED.project_id "
        f"RETURNING {NUMBER_COLUMNS}",
        number.number,
        project_id,
        number.system,
        number.vapi_phone_number_id,
        number.vapi_assistant_id,
    )
    if row is None:
        other = await connection.fetchval(
            "SELECT project_id FROM phone_numbers WHERE number = $1", number.number
        )
        raise ValidationFailed(
            [FieldError("number", f"{number.number} is already owned by project {other!r}")]
        )
    return number_view(row)


async def list_phone_numbers(
    connection: Connection, project_id: str | None = None
) -> list[dict[str, Any]]:
    """Every number (by project, then number), or one project's (404 for no such project)."""
    if project_id is not None:
        await _require_project(connection, project_id)
        return await _numbers(connection, project_id)
    rows = await connection.fetch(
        f"SELECT {NUMBER_COLUMNS} FROM phone_numbers ORDER BY project_id, number"  # noqa: S608
    )
    return [number_view(row) for row in rows]


async def patch_phone_number_row(
    connection: Connection, number: str, changes: Mapping[str, Any]
) -> dict[str, Any]:
    """Change a number's system and Vapi ids, validated against the row as it is, locked:
    two toggles at once apply one after the other, and neither is checked against a row
    the other has changed (a move to vapi needs Vapi's id, stored or sent)."""
    row = await connection.fetchrow(
        f"SELECT {NUMBER_COLUMNS} FROM phone_numbers WHERE number = $1 FOR UPDATE",  # noqa: S608
        number,
    )
    if row is None:
        raise NotFound(f"no phone number {number!r}")
    existing = PhoneNumber(
        row["number"], row["system"], row["vapi_phone_number_id"], row["vapi_assistant_id"]
    )
    patched = patch_phone_number(existing, changes)
    updated = await connection.fetchrow(
        "UPDATE phone_numbers SET system = $2, vapi_phone_number_id = $3, "  # noqa: S608
        "vapi_assistant_id = $4, updated_at = now() "
        f"WHERE number = $1 RETURNING {NUMBER_COLUMNS}",
        number,
        patched.system,
        patched.vapi_phone_number_id,
        patched.vapi_assistant_id,
    )
    assert updated is not None  # the row is locked: nobody deleted it meanwhile
    return number_view(updated)


async def delete_phone_number(connection: Connection, number: str) -> None:
    deleted = await connection.fetchval(
        "DELETE FROM phone_numbers WHERE number = $1 RETURNING number", number
    )
    if deleted is None:
        raise NotFound(f"no phone number {number!r}")


async def create_api_key(connection: Connection, project_id: str, name: str) -> CreatedKey:
    await _require_project(connection, project_id)
    key_id = secrets.token_hex(6)
    key = f"ahk_{key_id}_{secrets.token_urlsafe(32)}"
    await connection.execute(
        "INSERT INTO api_keys (id, project_id, name, key_hash) VALUES ($1, $2, $3, $4)",
        key_id,
        project_id,
        name,
        hash_key(key),
    )
    return CreatedKey(key_id, project_id, name, key)


async def list_api_keys(connection: Connection, project_id: str) -> list[dict[str, Any]]:
    """A project's keys, revoked ones too (when), oldest first: never the hash, which
    would let anyone who reads it test guesses offline."""
    await _require_project(connection, project_id)
    rows = await connection.fetch(
        "SELECT id, name, created_at, revoked_at FROM api_keys WHERE project_id = $1 "
        "ORDER BY created_at, id",
        project_id,
    )
    return [
        {
            "id": row["id"],
            "name": row["name"],
            "created_at": row["created_at"].isoformat(),
            "revoked_at": row["revoked_at"].isoformat() if row["revoked_at"] else None,
        }
        for row in rows
    ]


async def revoke_api_key(connection: Connection, key_id: str) -> None:
    revoked = await connection.fetchval(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1 RETURNING id",
        key_id,
    )
    if revoked is None:
        raise NotFound(f"no API key {key_id!r}")
