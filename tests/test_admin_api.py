"""The admin API over real HTTP against a real PostgreSQL: every route, every validation
error, and the auth matrix."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import trio
from trio_asyncio import aio_as_trio

from actors.store.call_record import FUNCTION_CALLS_SHOWN
from actors.store.db import open_database
from engine.messages import CallUpdated, FunctionCallRecorded, StoreWrite, new_event_id
from tests.helpers import ADMIN_TOKEN, http_request, running_engine, sid, wait_until
from tests.test_twilio_webhooks import ELSEWHERE, call, setup_project, twilio_post

PLUMBER: dict[str, Any] = {
    "id": "smith-plumbing",
    "name": "Smith Plumbing",
    "timezone": "America/Chicago",
    "greeting": "Smith Plumbing, after hours. How can I help?",
    "instructions": "You answer calls for Smith Plumbing.",
    "functionUrl": "https://hooks.example.com/smith",
    "functionSecret": "fn-secret-123456",
    "onCallNumber": "+15551234567",
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
    ("GET", "/admin/phone-numbers"),
    ("PATCH", "/admin/phone-numbers/+15550001111"),
    ("DELETE", "/admin/phone-numbers/+15550001111"),
    ("POST", "/admin/projects/smith-plumbing/api-keys"),
    ("GET", "/admin/projects/smith-plumbing/api-keys"),
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
        assert view["functionSecretSet"] is True
        assert "functionSecret" not in view
        assert "fn-secret-123456" not in created.body.decode()
        assert view["phoneNumbers"] == []

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
        without_secret = {k: v for k, v in PLUMBER.items() if k != "functionSecret"}
        kept = await http_request(
            "PUT", f"{base}/smith-plumbing", json=without_secret, token=ADMIN_TOKEN
        )
        assert kept.json()["functionSecretSet"] is True
        cleared = await http_request(
            "PUT", f"{base}/smith-plumbing", json=PLUMBER | {"functionSecret": None},
            token=ADMIN_TOKEN,
        )  # fmt: skip
        assert cleared.json()["functionSecretSet"] is False
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
        "onCallNumber": "555-1234",
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
    assert set(errors) == {"timezone", "onCallNumber", "tools[0].parameters"}
    assert "IANA time zone" in errors["timezone"]
    assert "E.164" in errors["onCallNumber"]
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
            json={"number": "+15550001111", "system": "vapi", "vapiPhoneNumberId": "pn-1"},
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
        "projectId": "smith-plumbing",
        "vapiPhoneNumberId": None,
        "vapiAssistantId": None,
    }
    assert (switched.status, switched.json()["system"]) == (201, "vapi")
    assert fields(stolen) == {"number": "+15550001111 is already owned by project 'smith-plumbing'"}
    assert set(fields(bad)) == {"number", "system"}
    assert unknown_project.status == 404
    assert view.json()["phoneNumbers"] == [
        {
            "number": "+15550001111",
            "projectId": "smith-plumbing",
            "system": "vapi",
            "vapiPhoneNumberId": "pn-1",
            "vapiAssistantId": None,
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
    assert (key["projectId"], key["name"]) == ("smith-plumbing", "dashboard")
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


async def add_number(base: str, body: dict[str, Any], project: str = "smith-plumbing") -> None:
    added = await http_request(
        "POST", f"{base}/projects/{project}/phone-numbers", json=body, token=ADMIN_TOKEN
    )
    assert added.status == 201, added.body


async def test_numbers_are_listed_and_toggled_between_systems(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        base = engine.bound_urls[0] + "/admin"
        for project in ("smith-plumbing", "jones-hvac"):
            body = PLUMBER | {"id": project}
            await http_request("POST", f"{base}/projects", json=body, token=ADMIN_TOKEN)
        await add_number(base, {"number": "+15550001111"})
        await add_number(base, {"number": "+15550002222"}, project="jones-hvac")
        number = f"{base}/phone-numbers/%2B15550001111"

        async def patch(body: object) -> Any:
            return await http_request("PATCH", number, json=body, token=ADMIN_TOKEN)

        no_id = await patch({"system": "vapi"})
        unchanged = await http_request("GET", f"{base}/phone-numbers", token=ADMIN_TOKEN)
        to_vapi = await patch({"system": "vapi", "vapiPhoneNumberId": "pn-1",
                               "vapiAssistantId": "as-1"})  # fmt: skip
        back = await patch({"system": "openai"})
        again = await patch({"system": "vapi", "vapiAssistantId": None})  # the stored id
        mistakes = await patch({"system": "sip", "number": "+15550009999", "colour": "red"})
        not_json = await http_request("PATCH", number, body=b"{", token=ADMIN_TOKEN)
        unknown = await http_request(
            "PATCH", f"{base}/phone-numbers/%2B15559999999", json={}, token=ADMIN_TOKEN
        )
        listed = await http_request("GET", f"{base}/phone-numbers", token=ADMIN_TOKEN)
        jones = await http_request(
            "GET", f"{base}/phone-numbers?project=jones-hvac", token=ADMIN_TOKEN
        )
        nobody = await http_request(
            "GET", f"{base}/phone-numbers?project=nobody", token=ADMIN_TOKEN
        )
        blank = await http_request("GET", f"{base}/phone-numbers?project=", token=ADMIN_TOKEN)
        typo = await http_request("GET", f"{base}/phone-numbers?projet=x", token=ADMIN_TOKEN)
    assert "required for a number on vapi" in fields(no_id)["vapiPhoneNumberId"]
    assert unchanged.json()["phoneNumbers"][0]["system"] == "openai"  # nothing was written
    assert (to_vapi.status, to_vapi.json()) == (200, {
        "number": "+15550001111", "projectId": "smith-plumbing", "system": "vapi",
        "vapiPhoneNumberId": "pn-1", "vapiAssistantId": "as-1",
    })  # fmt: skip
    # Back to this engine: Vapi's ids are kept, so toggling again needs nothing re-typed.
    assert (back.status, back.json()["system"], back.json()["vapiPhoneNumberId"]) == (
        200, "openai", "pn-1",
    )  # fmt: skip
    assert again.json() | {} == to_vapi.json() | {"vapiAssistantId": None}
    assert set(fields(mistakes)) == {"system", "number", "colour"}
    assert set(fields(not_json)) == {"body"}
    assert (unknown.status, unknown.json()) == (404, {"error": "no phone number '+15559999999'"})
    assert listed.json() == {"phoneNumbers": [
        {"number": "+15550002222", "projectId": "jones-hvac", "system": "openai",
         "vapiPhoneNumberId": None, "vapiAssistantId": None},
        again.json(),
    ]}  # fmt: skip
    assert [n["number"] for n in jones.json()["phoneNumbers"]] == ["+15550002222"]
    assert (nobody.status, nobody.json()) == (404, {"error": "no project 'nobody'"})
    assert (blank.status, blank.json()["field"]) == (400, "project")
    assert (typo.status, typo.json()["field"]) == (400, "projet")


async def test_a_patch_waits_for_the_row_and_is_checked_against_what_it_became(
    fresh_database: str, tmp_path: Path
) -> None:
    """The PATCH reads the row FOR UPDATE: while another transaction holds it (here one
    that clears Vapi's id), the PATCH waits, then is validated against the committed
    row. A plain read would have seen the id, passed, and written a vapi number with no
    id Vapi could be asked about."""
    async with running_engine(fresh_database, tmp_path) as engine:
        base = engine.bound_urls[0] + "/admin"
        await http_request("POST", f"{base}/projects", json=PLUMBER, token=ADMIN_TOKEN)
        await add_number(base, {"number": "+15550001111", "vapiPhoneNumberId": "pn-1"})
        answer: list[Any] = []

        async def patch() -> None:
            url = f"{base}/phone-numbers/%2B15550001111"
            answer.append(await http_request("PATCH", url, json={"system": "vapi"},
                                             token=ADMIN_TOKEN))  # fmt: skip

        holder = await aio_as_trio(asyncpg.connect)(fresh_database)
        watcher = await aio_as_trio(asyncpg.connect)(fresh_database)
        try:
            transaction = holder.transaction()
            await aio_as_trio(transaction.start)()
            await aio_as_trio(holder.execute)(
                "UPDATE phone_numbers SET vapi_phone_number_id = NULL WHERE number = '+15550001111'"
            )

            async def patch_waits_for_the_row() -> bool:
                # Outside the transaction, whose view of pg_stat_activity is its first.
                waiting = await aio_as_trio(watcher.fetchval)(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE%'"
                )
                return bool(waiting)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(patch)
                await wait_until(patch_waits_for_the_row, timeout_s=10)
                assert not answer
                await aio_as_trio(transaction.commit)()
        finally:
            await aio_as_trio(holder.close)()
            await aio_as_trio(watcher.close)()
        listed = await http_request("GET", f"{base}/phone-numbers", token=ADMIN_TOKEN)
    assert "required for a number on vapi" in fields(answer[0])["vapiPhoneNumberId"]
    assert listed.json()["phoneNumbers"][0]["system"] == "openai"


async def test_the_next_call_to_a_toggled_or_released_number_is_routed_by_it(
    fresh_database: str, tmp_path: Path
) -> None:
    from tests.test_vapi_calls import vapi_engine

    async with vapi_engine(fresh_database, tmp_path) as (engine, _vapi):
        await setup_project(engine)  # ELSEWHERE is on vapi
        number = f"{engine.bound_urls[0]}/admin/phone-numbers/%2B{ELSEWHERE[1:]}"
        to_openai = await http_request("PATCH", number, json={"system": "openai"},
                                       token=ADMIN_TOKEN)  # fmt: skip
        here = await twilio_post(engine, "/twilio/voice", call(sid(1), ELSEWHERE))
        to_vapi = await http_request("PATCH", number, json={"system": "vapi"}, token=ADMIN_TOKEN)
        there = await twilio_post(engine, "/twilio/voice", call(sid(2), ELSEWHERE))
        released = await http_request("DELETE", number, token=ADMIN_TOKEN)
        gone = await twilio_post(engine, "/twilio/voice", call(sid(3), ELSEWHERE))
    assert (to_openai.status, to_vapi.status) == (200, 200)
    # Answered here at once: a media stream to this engine's own media listener.
    assert re.search(
        r'<Connect><Stream url="ws://127\.0\.0\.1:\d+/twilio/media">', here.body.decode()
    )
    # Back on vapi: the (simulated) Vapi's TwiML, its own stream, not this engine's.
    assert "/twilio/media" not in there.body.decode()
    assert re.search(r'<Stream url="ws://127\.0\.0\.1:\d+/[^"]+/transport"', there.body.decode())
    assert released.status == 204
    assert "this number is not in service" in gone.body.decode()


async def test_a_projects_keys_are_listed_without_their_hashes(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        base = engine.bound_urls[0] + "/admin"
        await http_request("POST", f"{base}/projects", json=PLUMBER, token=ADMIN_TOKEN)
        keys = f"{base}/projects/smith-plumbing/api-keys"
        made = [
            (await http_request("POST", keys, json={"name": name}, token=ADMIN_TOKEN)).json()
            for name in ("dashboard", "reports")
        ]
        await http_request("DELETE", f"{base}/api-keys/{made[0]['id']}", token=ADMIN_TOKEN)
        listed = await http_request("GET", keys, token=ADMIN_TOKEN)
        unknown = await http_request("GET", f"{base}/projects/nobody/api-keys", token=ADMIN_TOKEN)
    shown = listed.json()["apiKeys"]
    assert [(k["id"], k["name"]) for k in shown] == [(m["id"], m["name"]) for m in made]
    assert all(set(k) == {"id", "name", "createdAt", "revokedAt"} for k in shown)
    assert shown[0]["revokedAt"] is not None
    assert shown[1]["revokedAt"] is None
    for key in made:
        assert key["key"] not in listed.body.decode()
        assert hashlib.sha256(key["key"].encode()).hexdigest() not in listed.body.decode()
    assert unknown.status == 404


def function_call(call_sid: str, name: str, at: datetime, latency_ms: int,
                  **fields: Any) -> FunctionCallRecorded:  # fmt: skip
    return FunctionCallRecorded(
        new_event_id(), call_sid, name, fields.pop("outcome", "ok"), latency_ms, at,
        project_id="smith-plumbing", **fields,
    )  # fmt: skip


async def test_a_calls_record_lists_its_function_calls_in_order_without_secrets(
    fresh_database: str, tmp_path: Path
) -> None:
    secret = PLUMBER["functionSecret"]
    signature = "sha256=" + "ab" * 32
    started = datetime(2026, 1, 5, 22, 0, tzinfo=UTC)
    records: list[StoreWrite] = [
        CallUpdated(sid(7), project_id="smith-plumbing", status="completed",
                    end_reason="end_call", started_at=started,
                    answered_at=started + timedelta(seconds=1), engine_instance="i-1"),
        # Made first, finished last (a slow backend): listed first.
        function_call(sid(7), "book_appointment", started + timedelta(seconds=9), 6000,
                      arguments={"slot_id": "slot-1", "note": f"key {secret}"},
                      http_status=200),
        function_call(sid(7), "get_slots", started + timedelta(seconds=8), 100,
                      arguments={"day": "tomorrow"}, outcome="error", http_status=500,
                      error=f"refused: {signature} token=abc"),
    ]  # fmt: skip
    many = sid(8)
    records.append(CallUpdated(many, project_id="smith-plumbing", status="completed"))
    records += [
        function_call(many, "get_slots", started + timedelta(seconds=n), 1)
        for n in range(FUNCTION_CALLS_SHOWN + 1)
    ]
    async with running_engine(fresh_database, tmp_path) as engine:
        base = engine.bound_urls[0] + "/admin"
        project = PLUMBER | {"functionUrl": "https://hooks.example.com/smith?token=abc"}
        await http_request("POST", f"{base}/projects", json=project, token=ADMIN_TOKEN)
        for write in records:
            await engine.mailboxes["store"].send(write)

        async def shown(call_sid: str, count: int) -> Any:
            answer = await http_request("GET", f"{base}/calls/{call_sid}", token=ADMIN_TOKEN)
            record = answer.json()
            return (
                record if answer.status == 200 and len(record["functionCalls"]) == count else None
            )

        record = await wait_until(partial(shown, sid(7), 2), timeout_s=10)
        bounded = await wait_until(partial(shown, many, FUNCTION_CALLS_SHOWN), timeout_s=10)
        bare = await http_request("GET", f"{base}/calls/{many}", token=ADMIN_TOKEN)
    assert [f["name"] for f in record["functionCalls"]] == ["book_appointment", "get_slots"]
    booked, slots = record["functionCalls"]
    assert booked == {
        "name": "book_appointment", "arguments": {"slot_id": "slot-1", "note": "key [redacted]"},
        "outcome": "ok", "httpStatus": 200, "latencyMs": 6000, "error": None,
        "at": (started + timedelta(seconds=9)).isoformat(),
    }  # fmt: skip
    assert (slots["outcome"], slots["httpStatus"], slots["latencyMs"]) == ("error", 500, 100)
    assert slots["error"] == "refused: sha256=[redacted] [redacted]"  # the URL's query
    text = str(record)
    assert secret not in text
    assert signature not in text
    assert "token=abc" not in text
    assert record["functionCallsTotal"] == 2
    assert (record["system"], record["vapiCallId"], record["summary"]) == ("openai", None, None)
    assert record["answeredAt"] == (started + timedelta(seconds=1)).isoformat()
    assert (record["engineInstance"], record["endReason"]) == ("i-1", "end_call")
    assert bounded["functionCallsTotal"] == FUNCTION_CALLS_SHOWN + 1
    assert bare.json()["functionCalls"][0]["at"] == started.isoformat()  # the earliest kept
