"""The admin API over real HTTP against a real PostgreSQL: every route, every validation
error, and the auth matrix."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from actors.store.db import open_database
from tests.helpers import ADMIN_TOKEN, http_request, running_engine

PLUMBER: dict[str, Any] = {
    "id": "smith-plumbing",
    "name": "Smith Plumbing",
    "timezone": "America/Chicago",
    "greeting": "Smith Plumbing, after hours. How can I help?",
    "instructions": "You answer calls for Smith Plumbing.",
    "function_url": "https://hooks.example.com/smith",
    "function_secret": "fn-secret-123456",
    "on_call_number": "+15551234567",
    "tools": [
        {
            "name": "get_slots",
            "description": "Free appointment slots",
            "parameters": {"type": "object", "properties": {"day": {"type": "string"}}},
        }
    ],
}

ROUTES = [
    ("POST", "/admin/projects"),
    ("GET", "/admin/projects"),
    ("GET", "/admin/projects/smith-plumbing"),
    ("PUT", "/admin/projects/smith-plumbing"),
    ("PATCH", "/admin/projects/smith-plumbing"),
    ("DELETE", "/admin/projects/smith-plumbing"),
    ("POST", "/admin/projects/smith-plumbing/phone-numbers"),
    ("DELETE", "/admin/phone-numbers/+15550001111"),
    ("POST", "/admin/projects/smith-plumbing/api-keys"),
    ("DELETE", "/admin/api-keys/abc123"),
    ("GET", "/admin/calls/CA123"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
async def test_every_admin_route_needs_the_admin_token(
    fresh_database: str, tmp_path: Path, method: str, path: str
) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        url = engine.bound_urls[0] + path
        missing = await http_request(method, url, json={})
        wrong = await http_request(method, url, json={}, token="not-the-admin-token")
        right = await http_request(method, url, json={}, token=ADMIN_TOKEN)
    for response in (missing, wrong):
        assert response.status == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert ADMIN_TOKEN not in response.body.decode()
    assert right.status not in (401, 403)
    assert right.status < 500, right.body


async def test_project_lifecycle(fresh_database: str, tmp_path: Path) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        base = engine.bound_urls[0] + "/admin/projects"

        created = await http_request("POST", base, json=PLUMBER, token=ADMIN_TOKEN)
        assert created.status == 201
        view = created.json()
        assert view["id"] == "smith-plumbing"
        assert view["function_secret_set"] is True
        assert "function_secret" not in view
        assert "fn-secret-123456" not in created.body.decode()
        assert view["phone_numbers"] == []

        again = await http_request("POST", base, json=PLUMBER, token=ADMIN_TOKEN)
        assert again.status == 409

        read = await http_request("GET", f"{base}/smith-plumbing", token=ADMIN_TOKEN)
        assert (read.status, read.json()) == (200, view)
        listed = await http_request("GET", base, token=ADMIN_TOKEN)
        assert [p["id"] for p in listed.json()["projects"]] == ["smith-plumbing"]

        patched = await http_request(
            "PATCH", f"{base}/smith-plumbing", json={"name": "Smith & Sons"}, token=ADMIN_TOKEN
        )
        assert patched.status == 200
        assert patched.json()["name"] == "Smith & Sons"
        assert patched.json()["greeting"] == PLUMBER["greeting"]  # the rest is kept

        replaced = await http_request(
            "PUT", f"{base}/smith-plumbing", json=PLUMBER | {"voice": "cedar"}, token=ADMIN_TOKEN
        )
        assert (replaced.status, replaced.json()["voice"]) == (200, "cedar")
        # The secret is write-only: a PUT that leaves it out keeps it; null clears it.
        without_secret = {k: v for k, v in PLUMBER.items() if k != "function_secret"}
        kept = await http_request(
            "PUT", f"{base}/smith-plumbing", json=without_secret, token=ADMIN_TOKEN
        )
        assert kept.json()["function_secret_set"] is True
        cleared = await http_request(
            "PUT", f"{base}/smith-plumbing", json=PLUMBER | {"function_secret": None},
            token=ADMIN_TOKEN,
        )  # fmt: skip
        assert cleared.json()["function_secret_set"] is False
        nul = await http_request(
            "PATCH", f"{base}/smith-plumbing", json={"name": "Smith\u0000"}, token=ADMIN_TOKEN
        )
        assert nul.status == 422
        assert replaced.json()["name"] == "Smith Plumbing"
        put_new = await http_request(
            "PUT", f"{base}/jones-hvac", json=PLUMBER | {"id": "jones-hvac"}, token=ADMIN_TOKEN
        )
        assert put_new.status == 201

        deleted = await http_request("DELETE", f"{base}/jones-hvac", token=ADMIN_TOKEN)
        assert (deleted.status, deleted.body) == (204, b"")
        gone = await http_request("GET", f"{base}/jones-hvac", token=ADMIN_TOKEN)
        assert (gone.status, gone.json()) == (404, {"error": "no project 'jones-hvac'"})


def fields(response: Any) -> dict[str, str]:
    assert response.status == 422, response.body
    body = response.json()
    assert body["error"] == "validation failed"
    return {item["field"]: item["message"] for item in body["fields"]}


async def test_validation_errors_are_422_with_one_message_per_field(
    fresh_database: str, tmp_path: Path
) -> None:
    bad = PLUMBER | {
        "timezone": "Mars/Base",
        "on_call_number": "555-1234",
        "tools": [{"name": "get_slots", "description": "x", "parameters": {"type": "array"}}],
    }
    async with running_engine(fresh_database, tmp_path) as engine:
        base = engine.bound_urls[0] + "/admin/projects"
        invalid = await http_request("POST", base, json=bad, token=ADMIN_TOKEN)
        not_json = await http_request("POST", base, body=b"{nope", token=ADMIN_TOKEN)
        mismatch = await http_request("PUT", f"{base}/other-id", json=PLUMBER, token=ADMIN_TOKEN)
        await http_request("POST", base, json=PLUMBER, token=ADMIN_TOKEN)
        bad_patch = await http_request(
            "PATCH", f"{base}/smith-plumbing", json={"timezone": "Nowhere"}, token=ADMIN_TOKEN
        )
        missing_patch = await http_request(
            "PATCH", f"{base}/nobody", json={"name": "x"}, token=ADMIN_TOKEN
        )
    errors = fields(invalid)
    assert set(errors) == {"timezone", "on_call_number", "tools[0].parameters"}
    assert "IANA time zone" in errors["timezone"]
    assert "E.164" in errors["on_call_number"]
    assert "JSON-schema object" in errors["tools[0].parameters"]
    assert set(fields(not_json)) == {"body"}
    assert fields(mismatch) == {"id": "does not match the id in the URL"}
    assert set(fields(bad_patch)) == {"timezone"}
    assert missing_patch.status == 404


async def test_phone_numbers_belong_to_one_project(fresh_database: str, tmp_path: Path) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        base = engine.bound_urls[0] + "/admin"
        for project in ("smith-plumbing", "jones-hvac"):
            body = PLUMBER | {"id": project}
            assert (
                await http_request("POST", f"{base}/projects", json=body, token=ADMIN_TOKEN)
            ).status == 201
        numbers = f"{base}/projects/smith-plumbing/phone-numbers"
        added = await http_request(
            "POST", numbers, json={"number": "+15550001111", "system": "openai"}, token=ADMIN_TOKEN
        )
        switched = await http_request(
            "POST",
            numbers,
            json={"number": "+15550001111", "system": "vapi", "vapi_phone_number_id": "pn-1"},
            token=ADMIN_TOKEN,
        )
        stolen = await http_request(
            "POST",
            f"{base}/projects/jones-hvac/phone-numbers",
            json={"number": "+15550001111"},
            token=ADMIN_TOKEN,
        )
        bad = await http_request(
            "POST", numbers, json={"number": "5550001111", "system": "sip"}, token=ADMIN_TOKEN
        )
        unknown_project = await http_request(
            "POST",
            f"{base}/projects/nobody/phone-numbers",
            json={"number": "+15550002222"},
            token=ADMIN_TOKEN,
        )
        view = await http_request("GET", f"{base}/projects/smith-plumbing", token=ADMIN_TOKEN)
        removed = await http_request(
            "DELETE", f"{base}/phone-numbers/+15550001111", token=ADMIN_TOKEN
        )
        removed_again = await http_request(
            "DELETE", f"{base}/phone-numbers/+15550001111", token=ADMIN_TOKEN
        )
    assert added.status == 201
    assert added.json() == {
        "number": "+15550001111",
        "system": "openai",
        "project_id": "smith-plumbing",
        "vapi_phone_number_id": None,
        "vapi_assistant_id": None,
    }
    assert (switched.status, switched.json()["system"]) == (201, "vapi")
    assert fields(stolen) == {"number": "+15550001111 is already owned by project 'smith-plumbing'"}
    assert set(fields(bad)) == {"number", "system"}
    assert unknown_project.status == 404
    assert view.json()["phone_numbers"] == [
        {
            "number": "+15550001111",
            "project_id": "smith-plumbing",
            "system": "vapi",
            "vapi_phone_number_id": "pn-1",
            "vapi_assistant_id": None,
        }
    ]
    assert removed.status == 204
    assert removed_again.status == 404


async def test_api_keys_are_shown_once_stored_hashed_and_revocable(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        base = engine.bound_urls[0] + "/admin"
        await http_request("POST", f"{base}/projects", json=PLUMBER, token=ADMIN_TOKEN)
        created = await http_request(
            "POST", f"{base}/projects/smith-plumbing/api-keys", json={"name": "dashboard"},
            token=ADMIN_TOKEN,
        )  # fmt: skip
        key = created.json()
        unknown = await http_request("POST", f"{base}/projects/nobody/api-keys", token=ADMIN_TOKEN)
        revoked = await http_request("DELETE", f"{base}/api-keys/{key['id']}", token=ADMIN_TOKEN)
        revoked_unknown = await http_request("DELETE", f"{base}/api-keys/nope", token=ADMIN_TOKEN)
    assert created.status == 201
    assert key["key"].startswith(f"ahk_{key['id']}_")
    assert (key["project_id"], key["name"]) == ("smith-plumbing", "dashboard")
    assert unknown.status == 404
    assert revoked.status == 204
    assert revoked_unknown.status == 404
    async with open_database(fresh_database, connect_timeout_s=10) as db:
        rows = await db.fetch("SELECT * FROM api_keys", timeout_s=5)
    assert len(rows) == 1
    stored = dict(rows[0])
    assert stored["key_hash"] == hashlib.sha256(key["key"].encode()).hexdigest()
    assert key["key"] not in repr(stored)  # only the hash is kept
    assert stored["revoked_at"] is not None


async def test_unknown_admin_paths_methods_and_huge_bodies(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        base = engine.bound_urls[0]
        unknown = await http_request("GET", f"{base}/admin/nothing", token=ADMIN_TOKEN)
        wrong_method = await http_request("PATCH", f"{base}/admin/projects", token=ADMIN_TOKEN)
        # Refused from the declared length, before a byte of the body is read.
        huge = await http_request(
            "POST", f"{base}/admin/projects", declared_length=2 << 20, token=ADMIN_TOKEN
        )
    assert unknown.status == 404
    assert wrong_method.status == 405
    assert wrong_method.headers["allow"] == "POST, GET"
    assert huge.status == 413


async def test_a_projects_model_and_language_are_stored_and_reserved_tools_refused(
    fresh_database: str, tmp_path: Path
) -> None:
    mini = PLUMBER | {"model": "gpt-realtime-mini", "language": "en-US"}
    reserved = PLUMBER | {
        "id": "jones-heating",
        "tools": [{"name": "end_call", "description": "", "parameters": {"type": "object"}}],
    }
    async with running_engine(fresh_database, tmp_path) as engine:
        base = engine.bound_urls[0] + "/admin/projects"
        created = await http_request("POST", base, json=mini, token=ADMIN_TOKEN)
        shown = await http_request("GET", f"{base}/smith-plumbing", token=ADMIN_TOKEN)
        cleared = await http_request(
            "PATCH", f"{base}/smith-plumbing", json={"model": None}, token=ADMIN_TOKEN
        )
        refused = await http_request("POST", base, json=reserved, token=ADMIN_TOKEN)
        unpriced = await http_request(
            "POST", base, json=reserved | {"tools": [], "model": "gpt-4o-realtime-preview"},
            token=ADMIN_TOKEN,
        )  # fmt: skip
        async with open_database(fresh_database, connect_timeout_s=10) as db:
            rows = await db.fetch(
                "SELECT model, language FROM projects WHERE id = 'smith-plumbing'", timeout_s=5
            )
    assert created.status == 201, created.body
    assert (shown.json()["model"], shown.json()["language"]) == ("gpt-realtime-mini", "en")
    assert cleared.json()["model"] is None
    assert [(row["model"], row["language"]) for row in rows] == [(None, "en")]
    assert refused.status == 422
    assert "reserved for the engine's own tools" in fields(refused)["tools[0].name"]
    assert set(fields(unpriced)) == {"model"}
