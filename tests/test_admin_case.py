"""One JSON casing across the API: the admin API answers in camelCase on every route,
takes camelCase, still takes the old snake_case names for one release (with a
Deprecation header and one warning per name), refuses a field sent under both names,
and docs/api.md's examples and table of renamed fields match its real answers."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, cast

import pytest

from api.http.admin import DEPRECATION, OPAQUE_FIELDS, AdminApi
from engine.json_case import BothNames, camel, camel_keys, field_to_api, from_api, snake
from engine.messages import CallUpdated, FunctionCallRecorded, new_event_id
from engine.phone_numbers import NUMBER_FIELDS
from engine.projects import PROJECT_FIELDS
from tests.helpers import (
    ADMIN_TOKEN,
    API_MD,
    HttpResponse,
    documented_fields,
    http_request,
    returned_fields,
    running_engine,
    sid,
    wait_until,
)

TOOL = {
    "name": "get_slots",
    "description": "Free appointment slots",
    # The business's own parameter names: returned as written, never renamed.
    "parameters": {
        "type": "object",
        "properties": {"slot_day": {"type": "string"}},
        "required": ["slot_day"],
    },
}
PROJECT: dict[str, Any] = {
    "id": "smith-plumbing",
    "name": "Smith Plumbing",
    "timezone": "America/Chicago",
    "greeting": "Smith Plumbing, after hours. How can I help?",
    "instructions": "You answer calls for Smith Plumbing.",
    "functionUrl": "https://hooks.example.com/smith",
    "functionSecret": "fn-secret-123456",
    "functionTimeoutS": 4,
    "onCallNumber": "+15551234567",
    "maxCallS": 600,
    "silenceTimeoutS": 20,
    "vadThreshold": 0.6,
    "vadSilenceMs": 700,
    "vadPrefixPaddingMs": 200,
    "vapiFallback": "on_call",
    "tools": [TOOL],
}
API_NAME = re.compile(r"[a-z][a-zA-Z0-9]*")


# -- the mapping --------------------------------------------------------------------------


def test_a_snake_name_becomes_camel_case_with_its_unit_suffix_in_place() -> None:
    assert camel("on_call_number") == "onCallNumber"
    assert camel("function_timeout_s") == "functionTimeoutS"
    assert camel("cost_usd") == "costUsd"
    assert camel("time_to_first_audio_ms") == "timeToFirstAudioMs"
    assert camel("timezone") == "timezone"
    for field in (*PROJECT_FIELDS, *NUMBER_FIELDS):
        assert API_NAME.fullmatch(camel(field)), field
        assert snake(camel(field)) == field


def test_from_api_renames_reports_old_names_and_refuses_both() -> None:
    renamed, old = from_api(
        {"onCallNumber": "+1", "max_call_s": 60, "colour": "red", "name": "x"}, PROJECT_FIELDS
    )
    assert renamed == {"on_call_number": "+1", "max_call_s": 60, "colour": "red", "name": "x"}
    assert old == ["max_call_s"]
    with pytest.raises(BothNames) as both:
        from_api({"maxCallS": 60, "max_call_s": 90}, PROJECT_FIELDS)
    assert both.value.field == "maxCallS"
    assert field_to_api("vapi_phone_number_id", NUMBER_FIELDS) == "vapiPhoneNumberId"
    assert field_to_api("tools[1].parameters.slot_day", PROJECT_FIELDS) == (
        "tools[1].parameters.slot_day"
    )
    assert field_to_api("some_unknown", PROJECT_FIELDS) == "some_unknown"  # as it was sent


def test_opaque_values_keep_their_keys() -> None:
    value = {"function_calls": [{"http_status": 1, "arguments": {"slot_id": "a"}}]}
    assert camel_keys(value, opaque=OPAQUE_FIELDS) == {
        "functionCalls": [{"httpStatus": 1, "arguments": {"slot_id": "a"}}]
    }


# -- over HTTP ----------------------------------------------------------------------------


def api_keys(value: object, skip: tuple[str, ...] = OPAQUE_FIELDS) -> set[str]:
    """Every key of a JSON answer at any depth, but inside what the API returns as it
    was written (a tool's schema, the model's arguments)."""
    return returned_fields(value, skip=frozenset(skip))


def template(path: str) -> str:
    """The route template a path of this test was made from."""
    path = path.split("?")[0]
    for pattern, name in (
        (r"/admin/projects/[^/]+", "/admin/projects/{id}"),
        (r"/admin/phone-numbers/[^/]+", "/admin/phone-numbers/{number}"),
        (r"/admin/api-keys/[^/]+", "/admin/api-keys/{key_id}"),
        (r"/admin/calls/[^/]+", "/admin/calls/{call_sid}"),
    ):
        path = re.sub(f"^{pattern}", name, path)
    return path


async def seed_call(engine: Any, call_sid: str) -> None:
    """A finished call with every column of its record set and two function calls."""
    started = datetime(2026, 11, 10, 15, 0, tzinfo=UTC)
    await engine.mailboxes["store"].send(
        CallUpdated(
            call_sid,
            project_id="smith-plumbing",
            status="completed",
            intent="routine",
            from_number="+15550001111",
            to_number="+15557654321",
            end_reason="end_call",
            started_at=started,
            answered_at=started + timedelta(seconds=1),
            ended_at=started + timedelta(seconds=62),
            duration_s=61.2,
            transcript=[{"role": "assistant", "text": "Smith Plumbing.", "offset_ms": 0}],
            usage={"output_tokens": 12, "input_token_details": {"audio_tokens": 30}},
            cost_usd=0.1,
            time_to_first_audio_ms=400,
            stream_sid="MZ1",
            engine_instance="i-1",
            twilio_status="completed",
            twilio_duration_s=62,
            system="openai",
        )
    )
    outcomes: tuple[tuple[Literal["ok", "error"], int], ...] = (("ok", 200), ("error", 500))
    for seconds, (outcome, status) in enumerate(outcomes):
        await engine.mailboxes["store"].send(
            FunctionCallRecorded(
                new_event_id(),
                call_sid,
                "get_slots",
                outcome,
                19,
                started + timedelta(seconds=10 + seconds),
                project_id="smith-plumbing",
                arguments={"slot_day": "tomorrow"},
                http_status=status,
                error=None if outcome == "ok" else "the booking system failed (HTTP 500)",
            )
        )


Answers = list[tuple[str, str, HttpResponse]]


async def ask_every_route(engine: Any) -> Answers:
    """Every admin route once or more, as an operator would use them, in an order that
    works (a project, a number, a key, a call, then the deletes); each answer with the
    method and path that asked for it."""
    base = engine.bound_urls[0]
    answers: Answers = []

    async def ask(method: str, path: str, body: Any = None) -> None:
        kwargs: dict[str, Any] = {"token": ADMIN_TOKEN}
        if body is not None:
            kwargs["json"] = body
        answers.append((method, path, await http_request(method, base + path, **kwargs)))

    await ask("POST", "/admin/projects", PROJECT)
    await ask("PUT", "/admin/projects/smith-plumbing", PROJECT | {"voice": "cedar"})
    await ask("PATCH", "/admin/projects/smith-plumbing", {"greeting": "Hello."})
    await ask("POST", "/admin/projects/smith-plumbing/phone-numbers", VAPI_NUMBER)
    await ask("PATCH", "/admin/phone-numbers/+15557654321", {"vapiAssistantId": None})
    await ask("GET", "/admin/phone-numbers")
    await ask("GET", "/admin/projects")
    await ask("GET", "/admin/projects/smith-plumbing")
    await ask("POST", "/admin/projects/smith-plumbing/api-keys", {"name": "dashboard"})
    key = answers[-1][2].json()
    await ask("GET", "/admin/projects/smith-plumbing/api-keys")
    await ask("DELETE", f"/admin/api-keys/{key['id']}")
    await seed_recorded_call(engine, sid(41))
    await ask("GET", f"/admin/calls/{sid(41)}")
    await ask("POST", "/admin/projects", PROJECT | {"id": "x", "onCallNumber": "5"})
    await ask("PATCH", "/admin/phone-numbers/+15557654321", UNSET_VAPI_ID)
    await ask("GET", "/admin/phone-numbers?projet=smith-plumbing")
    await ask("DELETE", "/admin/phone-numbers/+15557654321")
    await ask("DELETE", "/admin/projects/smith-plumbing")
    await ask("GET", "/admin/calls/CA0")
    return answers


VAPI_NUMBER = {
    "number": "+15557654321", "system": "vapi", "vapiPhoneNumberId": "pn-1",
    "vapiAssistantId": "as-1",
}  # fmt: skip
UNSET_VAPI_ID = {"system": "vapi", "vapiPhoneNumberId": None}  # a Vapi number needs one


async def add_vapi_number(engine: Any) -> HttpResponse:
    url = engine.bound_urls[0] + "/admin/projects/smith-plumbing/phone-numbers"
    added = await http_request("POST", url, json=VAPI_NUMBER, token=ADMIN_TOKEN)
    assert added.status == 201, added.body
    return added


async def add_project(engine: Any) -> HttpResponse:
    url = engine.bound_urls[0] + "/admin/projects"
    created = await http_request("POST", url, json=PROJECT, token=ADMIN_TOKEN)
    assert created.status == 201, created.body
    return created


async def seed_recorded_call(engine: Any, call_sid: str) -> None:
    """``seed_call``, and wait until the store has written it."""
    await seed_call(engine, call_sid)
    url = f"{engine.bound_urls[0]}/admin/calls/{call_sid}"

    async def recorded() -> Any:
        answer = await http_request("GET", url, token=ADMIN_TOKEN)
        return answer.status == 200 and answer.json()["functionCallsTotal"] == 2

    await wait_until(recorded, timeout_s=10)


def body_of(answers: Answers, method: str, path: str) -> Any:
    return next(a.json() for m, p, a in answers if (m, p) == (method, path))


async def test_every_admin_route_answers_in_camel_case_only(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        answers = await ask_every_route(engine)
    served = AdminApi(cast("Any", None), None).route_templates()
    assert {(method, template(path)) for method, path, _ in answers} == served
    for method, path, answer in answers:
        assert "deprecation" not in answer.headers, (method, path)  # nothing deprecated
        keys = api_keys(answer.json()) if answer.body else set()
        assert all(API_NAME.fullmatch(key) for key in keys), (method, path, keys)


async def test_the_admin_tokens_monitoring_routes_answer_in_camel_case(
    fresh_database: str, tmp_path: Path
) -> None:
    # Its other JSON routes (/metrics is Prometheus text, not JSON).
    async with running_engine(fresh_database, tmp_path) as engine:
        monitoring = [
            await http_request("GET", f"{engine.bound_urls[0]}{path}", token=ADMIN_TOKEN)
            for path in ("/stats", "/health/detailed")
        ]
    for answer in monitoring:
        assert answer.status == 200, answer.body
        keys = api_keys(answer.json())
        assert all(API_NAME.fullmatch(key) for key in keys), keys


async def test_validation_errors_name_the_fields_as_the_api_does(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        base = engine.bound_urls[0] + "/admin"
        await add_project(engine)
        await add_vapi_number(engine)
        invalid = await http_request(
            "POST", f"{base}/projects", json=PROJECT | {"id": "x", "onCallNumber": "5"},
            token=ADMIN_TOKEN,
        )  # fmt: skip
        number = await http_request(
            "PATCH", f"{base}/phone-numbers/+15557654321",
            json=UNSET_VAPI_ID, token=ADMIN_TOKEN,
        )  # fmt: skip
    assert {field["field"] for field in invalid.json()["fields"]} == {"id", "onCallNumber"}
    assert [field["field"] for field in number.json()["fields"]] == ["vapiPhoneNumberId"]


async def test_a_tools_schema_comes_back_with_the_businesss_own_names(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        await add_project(engine)
        url = engine.bound_urls[0] + "/admin/projects/smith-plumbing"
        project = await http_request("GET", url, token=ADMIN_TOKEN)
    assert project.json()["tools"] == [TOOL]  # slot_day stays slot_day


async def test_a_calls_detail_keeps_what_others_wrote_and_gives_its_turns_in_camel_case(
    fresh_database: str, tmp_path: Path
) -> None:
    """The model's arguments and usage as they were written; the transcript's turns in
    the API's names, the same in the admin API and the analytics API."""
    async with running_engine(fresh_database, tmp_path) as engine:
        base = engine.bound_urls[0]
        await add_project(engine)
        await seed_recorded_call(engine, sid(41))
        admin = await http_request("GET", f"{base}/admin/calls/{sid(41)}", token=ADMIN_TOKEN)
        analytics = await http_request(
            "GET", f"{base}/analytics/project/smith-plumbing/calls/{sid(41)}", token=ADMIN_TOKEN
        )
    call = admin.json()
    assert call["functionCalls"][0]["arguments"] == {"slot_day": "tomorrow"}
    assert call["usage"] == {"outputTokens": 12, "inputTokenDetails": {"audioTokens": 30}}
    assert call["transcript"] == [{"role": "assistant", "text": "Smith Plumbing.", "offsetMs": 0}]
    assert analytics.json()["transcript"] == call["transcript"]


async def test_each_example_answer_in_api_md_names_the_fields_its_route_returns(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        answers = await ask_every_route(engine)
    key_route = "/admin/projects/smith-plumbing/api-keys"
    for curl, (method, path) in (
        ('$T" $E/admin/projects/smith-plumbing', ("GET", "/admin/projects/smith-plumbing")),
        ('$T" $E/admin/phone-numbers', ("GET", "/admin/phone-numbers")),
        (f'$T" $E{key_route}', ("GET", key_route)),
        (f'-d \'{{"name":"dashboard"}}\' $E{key_route}', ("POST", key_route)),
        ('$T" $E/admin/calls/CA', ("GET", f"/admin/calls/{sid(41)}")),
    ):
        real = api_keys(body_of(answers, method, path), NOT_DOCUMENTED)
        assert real == documented_fields(curl), curl


async def test_api_mds_table_renames_each_old_name_once_and_nothing_else(
    fresh_database: str, tmp_path: Path
) -> None:
    """docs/api.md's table of renamed fields: every old name a request could send, and
    every camelCase name an answer holds, each once, old -> camel(old)."""
    async with running_engine(fresh_database, tmp_path) as engine:
        answers = await ask_every_route(engine)
    table = renamed_fields()
    assert all(new == camel(old) for old, new in table.items())
    sendable = {field for field in (*PROJECT_FIELDS, *NUMBER_FIELDS) if camel(field) != field}
    assert sendable <= set(table)
    answered = set().union(*(api_keys(a.json(), NOT_DOCUMENTED) for _, _, a in answers if a.body))
    renamed_in_answers = {key for key in answered if key != key.lower()}
    assert renamed_in_answers <= set(table.values())
    # And nothing listed that no request sends and no answer holds.
    assert set(table.values()) <= renamed_in_answers | {camel(field) for field in sendable}


# Not the API's names, or (usage) not the same from one call to the next.
NOT_DOCUMENTED = ("arguments", "parameters", "usage")


def renamed_fields() -> dict[str, str]:
    """docs/api.md's table of old -> new names (its "Field names" section)."""
    text = API_MD.read_text()
    section = text[text.index("### Field names") : text.index("### POST /admin/projects")]
    return dict(re.findall(r"^\| `(\w+)`[^|]* \| `(\w+)` \|$", section, re.MULTILINE))


async def test_old_names_are_accepted_for_a_release_with_a_deprecation_header(
    fresh_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="afterhours.admin")
    old = {(snake(key) if key != "tools" else key): value for key, value in PROJECT.items()}
    assert "on_call_number" in old
    assert "onCallNumber" not in old
    async with running_engine(fresh_database, tmp_path) as engine:
        base = engine.bound_urls[0] + "/admin"
        by_old = await http_request("POST", f"{base}/projects", json=old, token=ADMIN_TOKEN)
        by_new = await http_request(
            "POST", f"{base}/projects", json=PROJECT | {"id": "jones-hvac"}, token=ADMIN_TOKEN
        )
        again = await http_request(
            "PUT", f"{base}/projects/smith-plumbing", json=old, token=ADMIN_TOKEN
        )
        patched = await http_request(
            "PATCH", f"{base}/projects/smith-plumbing", json={"max_call_s": 300},
            token=ADMIN_TOKEN,
        )  # fmt: skip
        number = await http_request(
            "POST", f"{base}/projects/smith-plumbing/phone-numbers",
            json={"number": "+15557654321", "system": "vapi", "vapi_phone_number_id": "pn-1"},
            token=ADMIN_TOKEN,
        )  # fmt: skip
        toggled = await http_request(
            "PATCH", f"{base}/phone-numbers/+15557654321",
            json={"system": "openai", "vapi_assistant_id": "as-1"}, token=ADMIN_TOKEN,
        )  # fmt: skip
        # An old name with a bad value: refused as ever, named as the API names it now.
        refused = await http_request(
            "PATCH", f"{base}/projects/smith-plumbing", json={"on_call_number": "5"},
            token=ADMIN_TOKEN,
        )  # fmt: skip
        read = await http_request("GET", f"{base}/projects/smith-plumbing", token=ADMIN_TOKEN)
        other = await http_request("GET", f"{base}/projects/jones-hvac", token=ADMIN_TOKEN)
    for answer in (by_old, again, patched, number, toggled, refused):
        assert answer.headers["deprecation"] == DEPRECATION.decode(), answer.body
    assert "deprecation" not in by_new.headers
    assert f"`Deprecation: {DEPRECATION.decode()}`" in API_MD.read_text()  # as documented
    assert "deprecation" not in read.headers
    assert (by_old.status, again.status, patched.status) == (201, 200, 200)
    # The same stored result under either name.
    assert by_old.json() == by_new.json() | {"id": "smith-plumbing"}
    assert read.json()["maxCallS"] == 300
    assert read.json() | {"maxCallS": 600, "phoneNumbers": []} == other.json() | {
        "id": "smith-plumbing"
    }
    assert number.json() | toggled.json() == {
        "number": "+15557654321", "projectId": "smith-plumbing", "system": "openai",
        "vapiPhoneNumberId": "pn-1", "vapiAssistantId": "as-1",
    }  # fmt: skip
    assert refused.status == 422
    assert [field["field"] for field in refused.json()["fields"]] == ["onCallNumber"]
    # One warning per old name, however many requests sent it.
    warned = [r.getMessage() for r in caplog.records if "old field name" in r.getMessage()]
    named = [re.search(r"old field name (\w+)", message)[1] for message in warned]  # type: ignore[index]
    assert sorted(named) == sorted(set(named))
    assert {"on_call_number", "max_call_s", "vapi_phone_number_id", "vapi_assistant_id"} <= set(
        named
    )
    assert "fn-secret-123456" not in "\n".join(warned)


async def test_a_field_under_both_names_is_refused_and_nothing_is_written(
    fresh_database: str, tmp_path: Path
) -> None:
    both = PROJECT | {"on_call_number": "+15557777777"}
    async with running_engine(fresh_database, tmp_path) as engine:
        base = engine.bound_urls[0] + "/admin"
        created = await http_request("POST", f"{base}/projects", json=both, token=ADMIN_TOKEN)
        missing = await http_request("GET", f"{base}/projects/smith-plumbing", token=ADMIN_TOKEN)
        await http_request("POST", f"{base}/projects", json=PROJECT, token=ADMIN_TOKEN)
        await http_request(
            "POST", f"{base}/projects/smith-plumbing/phone-numbers",
            json={"number": "+15557654321"}, token=ADMIN_TOKEN,
        )  # fmt: skip
        number = await http_request(
            "PATCH", f"{base}/phone-numbers/+15557654321",
            json={"vapiAssistantId": "as-1", "vapi_assistant_id": "as-2"}, token=ADMIN_TOKEN,
        )  # fmt: skip
        listed = await http_request("GET", f"{base}/phone-numbers", token=ADMIN_TOKEN)
    assert created.status == 400
    assert created.json()["field"] == "onCallNumber"
    assert "onCallNumber and on_call_number" in created.json()["error"]
    assert missing.status == 404
    assert (number.status, number.json()["field"]) == (400, "vapiAssistantId")
    assert listed.json()["phoneNumbers"][0]["vapiAssistantId"] is None


async def test_the_cli_sends_camel_case_and_names_a_files_fields_as_the_file_does(
    fresh_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.test_admin_cli import EXAMPLE, cli

    caplog.set_level(logging.WARNING, logger="afterhours.admin")
    broken = tmp_path / "broken.toml"
    broken.write_text('id = "acme"\nname = "Acme"\ntimezone = "UTC"\non_call_number = "555"\n')
    twice = tmp_path / "twice.toml"
    twice.write_text(
        'id = "acme"\nname = "Acme"\ntimezone = "UTC"\nmax_call_s = 60\nmaxCallS = 90\n'
    )
    async with running_engine(fresh_database, tmp_path) as engine:
        url = engine.bound_urls[0]
        applied = await cli(url, "project", "apply", str(EXAMPLE))
        toggled = await cli(url, "number", "set", "+15557654321", "--system", "vapi",
                            "--vapi-phone-number-id", "pn-1")  # fmt: skip
        shown = await cli(url, "project", "show", "smith-plumbing")
        invalid = await cli(url, "project", "apply", str(broken))
        doubled = await cli(url, "project", "apply", str(twice))
    assert applied[0] == 0, applied
    assert toggled[0] == 0, toggled
    assert "on call    +15551234567" in shown[1]
    assert "calls end after 900 s, or 30 s of silence" in shown[1]
    assert "vapi number pn-1" in shown[1]
    assert invalid[0] == 1
    assert "on_call_number: '555' is not an E.164 number" in invalid[2]
    assert doubled[0] == 1
    assert "`maxCallS` is given twice" in doubled[2]
    assert not [r for r in caplog.records if "old field name" in r.getMessage()]


def test_the_dashboard_reads_and_sends_the_admin_apis_camel_case_names() -> None:
    # (The browser test that clicks through the page needs chromium; this one does not.)
    from api.http.dashboard import PAGE

    script = PAGE.decode() if isinstance(PAGE, bytes) else str(PAGE)
    old = {field for field in (*PROJECT_FIELDS, *NUMBER_FIELDS) if camel(field) != field}
    old |= {"phone_numbers", "project_id", "api_keys", "created_at", "revoked_at"}
    assert not {name for name in old if re.search(rf"\b{name}\b", script)}
    assert "phoneNumbers: mine" in script
    assert script.count("vapiPhoneNumberId") == 4  # shown, checked, sent on a move and an add
