"""Project, tool and phone number validation: defaults, every message, patches, output."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from engine.errors import EngineError
from engine.field_checks import FieldError, ValidationFailed, decode_json_object
from engine.phone_numbers import PhoneNumber, is_e164, parse_phone_number
from engine.project_tools import Tool
from engine.projects import Project, parse_project, patch_project

SECRET = "fn-secret-0123456789"
MINIMAL: dict[str, Any] = {"id": "smith-plumbing", "name": "Smith", "timezone": "America/Chicago"}
BOOK_VISIT: dict[str, Any] = {
    "name": "book_visit",
    "description": "Book a technician visit.",
    "parameters": {
        "type": "object",
        "properties": {
            "address": {"type": "string"},
            "urgency": {"enum": ["emergency", "routine"]},
            "window": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "contact": {"$ref": "#/$defs/contact"},
        },
        "required": ["address", "urgency"],
    },
}
FULL: dict[str, Any] = {
    "id": "smith-plumbing",
    "name": "Smith Plumbing & Heating",
    "timezone": "America/Chicago",
    "greeting": "Smith Plumbing, after hours. How can I help?",
    "instructions": "Ask for the address first.",
    "voice": "cedar",
    "language": "es",
    "model": "gpt-realtime-mini",
    "tools": [
        BOOK_VISIT,
        {"name": "get-hours", "description": "", "parameters": {"type": "object"}},
    ],
    "function_url": "https://hooks.example.com/afterhours?shop=1",
    "function_secret": SECRET,
    "function_timeout_s": 7.5,
    "on_call_number": "+15551234567",
    "max_call_s": 1200,
    "silence_timeout_s": 45,
    "vad_threshold": 0.7,
    "vad_silence_ms": 800,
    "vad_prefix_padding_ms": 200,
    "vapi_fallback": "on_call",
}
ID_TEXT = (
    "is not a project id: use 2 to 63 lowercase letters, digits and hyphens, starting with "
    "a letter or digit (e.g. smith-plumbing)"
)
E164_TEXT = "is not an E.164 number (+ and 7-15 digits, e.g. +15551234567)"
VOICE_TEXT = (
    "is not a voice; use one of alloy, ash, ballad, coral, echo, sage, shimmer, verse, marin, cedar"
)
URL_TEXT = "expected a URL starting with http:// or https:// that names a host"
SCHEMA_TEXT = 'must be a JSON-schema object: {"type": "object", ...}'
PROPERTY_TEXT = 'must be a schema with "type" (or "enum", "anyOf", "oneOf", "$ref")'
TOOL_NAME_TEXT = "is not a tool name: use 1 to 64 letters, digits, _ or - (e.g. book_visit)"
LANGUAGE_TEXT = (
    "is not an ISO 639-1 language code (two letters, e.g. en or es; a tag such as en-US is "
    "stored as its language, en)"
)
MODEL_TEXT = (
    "is not a Realtime model with built-in prices; use one of gpt-realtime, gpt-realtime-1.5, "
    "gpt-realtime-2, gpt-realtime-mini, gpt-realtime-2.1-mini (or a dated snapshot of one), "
    "or leave it out for OPENAI_REALTIME_MODEL"
)
RESERVED_TEXT = (
    "is reserved for the engine's own tools (classify_call, transfer_to_on_call, end_call): "
    "choose another name"
)


def errors_of(call: Callable[[], object]) -> list[FieldError]:
    with pytest.raises(ValidationFailed) as caught:
        call()
    return caught.value.errors


def without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {name: value for name, value in data.items() if name != key}


def with_tool(**changes: Any) -> dict[str, Any]:
    """MINIMAL with one tool: BOOK_VISIT changed by ``changes`` (None removes a key)."""
    tool = {key: value for key, value in {**BOOK_VISIT, **changes}.items() if value is not None}
    return {**MINIMAL, "function_url": "https://hooks.example.com/fn", "tools": [tool]}


def test_full_project_round_trips() -> None:
    project = parse_project(decode_json_object(msgspec.json.encode(FULL)))

    assert project.function_secret == SECRET
    assert project.tools[0] == Tool(
        BOOK_VISIT["name"], BOOK_VISIT["description"], BOOK_VISIT["parameters"]
    )
    assert msgspec.to_builtins(project) == FULL
    assert parse_project(msgspec.to_builtins(project)) == project


def test_a_toml_file_parses_like_json() -> None:
    text = """
        id = "smith-plumbing"
        name = "Smith Plumbing & Heating"
        timezone = "America/Chicago"
        function_timeout_s = 5
        function_url = "https://hooks.example.com/fn"
        on_call_number = "+15551234567"

        [[tools]]
        name = "book_visit"
        description = "Book a technician visit."

        [tools.parameters]
        type = "object"
        required = ["address"]
        properties = { address = { type = "string" } }
    """
    project = parse_project(tomllib.loads(text))
    assert project.tools[0].parameters["required"] == ["address"]
    assert project.function_timeout_s == 5.0


def test_defaults_fill_every_optional_field() -> None:
    assert parse_project(MINIMAL) == Project(
        id="smith-plumbing",
        name="Smith",
        timezone="America/Chicago",
        greeting="",
        instructions="",
        voice="marin",
        language="en",
        model=None,
        tools=[],
        function_url=None,
        function_secret=None,
        function_timeout_s=5.0,
        on_call_number=None,
        max_call_s=900,
        silence_timeout_s=30,
        vad_threshold=0.5,
        vad_silence_ms=500,
        vad_prefix_padding_ms=300,
    )


def test_an_integer_timeout_is_stored_as_a_float() -> None:
    timeout = parse_project({**MINIMAL, "function_timeout_s": 5}).function_timeout_s
    assert type(timeout) is float


def test_tools_without_a_secret_are_accepted() -> None:
    project = parse_project(without(FULL, "function_secret"))
    assert project.function_secret is None
    assert len(project.tools) == 2


def test_tool_parameters_are_copied_from_the_input() -> None:
    data = with_tool(parameters={"type": "object", "properties": {}})
    project = parse_project(data)
    data["tools"][0]["parameters"]["properties"]["extra"] = {"type": "string"}
    assert project.tools[0].parameters == {"type": "object", "properties": {}}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"id": "ab"}, "id", id="id-2-chars"),
        pytest.param({"id": "a" * 63}, "id", id="id-63-chars"),
        pytest.param({"id": "9-lives"}, "id", id="id-starts-with-digit"),
        pytest.param({"name": "N" * 200}, "name", id="name-200-chars"),
        pytest.param({"timezone": "UTC"}, "timezone", id="timezone-utc"),
        pytest.param({"greeting": "g" * 1000}, "greeting", id="greeting-1000-chars"),
        pytest.param({"instructions": "i" * 20_000}, "instructions", id="instructions-20000"),
        pytest.param({"language": "zu"}, "language", id="language-last-code"),
        pytest.param({"model": "gpt-realtime-2"}, "model", id="model-reasoning"),
        pytest.param({"model": "gpt-realtime-mini-2025-12-15"}, "model", id="model-snapshot"),
        pytest.param({"model": None}, "model", id="model-null"),
        pytest.param({"function_url": "http://127.0.0.1:9000/fn"}, "function_url", id="url-port"),
        pytest.param({"function_timeout_s": 30}, "function_timeout_s", id="timeout-30"),
        pytest.param({"function_timeout_s": 0.001}, "function_timeout_s", id="timeout-tiny"),
        pytest.param({"max_call_s": 30}, "max_call_s", id="max-call-30"),
        pytest.param({"max_call_s": 7200}, "max_call_s", id="max-call-7200"),
        pytest.param({"silence_timeout_s": 5}, "silence_timeout_s", id="silence-5"),
        pytest.param({"silence_timeout_s": 600}, "silence_timeout_s", id="silence-600"),
    ],
)
def test_boundary_values_are_accepted(changes: dict[str, Any], field: str) -> None:
    project = parse_project({**MINIMAL, **changes})
    assert getattr(project, field) == changes[field]


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        pytest.param(without(MINIMAL, "id"), "id", "required", id="id-missing"),
        pytest.param({**MINIMAL, "id": 5}, "id", "expected a string", id="id-not-string"),
        pytest.param({**MINIMAL, "id": "Smith"}, "id", f"'Smith' {ID_TEXT}", id="id-uppercase"),
        pytest.param({**MINIMAL, "id": "a"}, "id", f"'a' {ID_TEXT}", id="id-1-char"),
        pytest.param({**MINIMAL, "id": "-ab"}, "id", f"'-ab' {ID_TEXT}", id="id-leading-hyphen"),
        pytest.param({**MINIMAL, "id": "ab\n"}, "id", f"'ab\\n' {ID_TEXT}", id="id-newline"),
        pytest.param(
            {**MINIMAL, "id": "a" * 64},
            "id",
            f"'{'a' * 57}...' {ID_TEXT}",
            id="id-64-chars-shown-shortened",
        ),
        pytest.param(without(MINIMAL, "name"), "name", "required", id="name-missing"),
        pytest.param({**MINIMAL, "name": ""}, "name", "must not be empty", id="name-empty"),
        pytest.param({**MINIMAL, "name": "  "}, "name", "must not be empty", id="name-blank"),
        pytest.param(
            {**MINIMAL, "name": "N" * 201},
            "name",
            "must be at most 200 characters (got 201)",
            id="name-201-chars",
        ),
        pytest.param(without(MINIMAL, "timezone"), "timezone", "required", id="timezone-missing"),
        pytest.param(
            {**MINIMAL, "timezone": "Mars/Base"},
            "timezone",
            "'Mars/Base' is not an IANA time zone name (e.g. America/Chicago)",
            id="timezone-unknown",
        ),
        pytest.param(
            {**MINIMAL, "timezone": "america/chicago"},
            "timezone",
            "'america/chicago' is not an IANA time zone name (e.g. America/Chicago)",
            id="timezone-wrong-case",
        ),
        pytest.param(
            {**MINIMAL, "greeting": "g" * 1001},
            "greeting",
            "must be at most 1000 characters (got 1001)",
            id="greeting-1001-chars",
        ),
        pytest.param(
            {**MINIMAL, "greeting": None}, "greeting", "expected a string", id="greeting-null"
        ),
        pytest.param(
            {**MINIMAL, "instructions": "i" * 20_001},
            "instructions",
            "must be at most 20000 characters (got 20001)",
            id="instructions-20001-chars",
        ),
        pytest.param({**MINIMAL, "voice": "robot"}, "voice", f"'robot' {VOICE_TEXT}", id="voice"),
        pytest.param(
            {**MINIMAL, "language": "xx"},
            "language",
            f"'xx' {LANGUAGE_TEXT}",
            id="language-not-iso-639-1",
        ),
        pytest.param(
            {**MINIMAL, "language": "xx-US"},
            "language",
            f"'xx-US' {LANGUAGE_TEXT}",
            id="language-tag-of-no-language",
        ),
        pytest.param(
            {**MINIMAL, "language": "yue"},
            "language",
            f"'yue' {LANGUAGE_TEXT}",
            id="language-3-letters",
        ),
        pytest.param(
            {**MINIMAL, "language": "english"},
            "language",
            f"'english' {LANGUAGE_TEXT}",
            id="language-word",
        ),
        pytest.param(
            {**MINIMAL, "language": "en-"},
            "language",
            f"'en-' {LANGUAGE_TEXT}",
            id="language-empty-subtag",
        ),
        pytest.param(
            {**MINIMAL, "model": "gpt-realtime-2.1"},
            "model",
            f"'gpt-realtime-2.1' {MODEL_TEXT}",
            id="model-without-prices",
        ),
        pytest.param(
            {**MINIMAL, "model": "gpt realtime"},
            "model",
            f"'gpt realtime' {MODEL_TEXT}",
            id="model-space",
        ),
        pytest.param(
            {**MINIMAL, "model": 15}, "model", "expected a string or null", id="model-int"
        ),
        pytest.param({**MINIMAL, "tools": {}}, "tools", "expected a list", id="tools-not-list"),
        pytest.param(
            {**MINIMAL, "function_url": "ftp://files.example.com"},
            "function_url",
            URL_TEXT,
            id="url-ftp",
        ),
        pytest.param(
            {**MINIMAL, "function_url": "https://"}, "function_url", URL_TEXT, id="url-no-host"
        ),
        pytest.param(
            {**MINIMAL, "function_url": "http://h.example:port/"},
            "function_url",
            URL_TEXT,
            id="url-bad-port",
        ),
        pytest.param(
            {**MINIMAL, "function_url": 5},
            "function_url",
            "expected a string or null",
            id="url-not-string",
        ),
        pytest.param(
            {**MINIMAL, "function_secret": ""},
            "function_secret",
            "must not be empty (leave it out or send null for no secret)",
            id="secret-empty",
        ),
        pytest.param(
            {**MINIMAL, "function_timeout_s": 0},
            "function_timeout_s",
            "must be greater than 0 and at most 30 seconds",
            id="timeout-0",
        ),
        pytest.param(
            {**MINIMAL, "function_timeout_s": 30.5},
            "function_timeout_s",
            "must be greater than 0 and at most 30 seconds",
            id="timeout-30.5",
        ),
        pytest.param(
            {**MINIMAL, "function_timeout_s": float("nan")},
            "function_timeout_s",
            "must be greater than 0 and at most 30 seconds",
            id="timeout-nan",
        ),
        pytest.param(
            {**MINIMAL, "function_timeout_s": 10**400},
            "function_timeout_s",
            "must be greater than 0 and at most 30 seconds",
            id="timeout-huge-int",
        ),
        pytest.param(
            {**MINIMAL, "function_timeout_s": "5"},
            "function_timeout_s",
            "expected a number",
            id="timeout-string",
        ),
        pytest.param(
            {**MINIMAL, "function_timeout_s": True},
            "function_timeout_s",
            "expected a number",
            id="timeout-bool",
        ),
        pytest.param(
            {**MINIMAL, "on_call_number": "555-1234"},
            "on_call_number",
            f"'555-1234' {E164_TEXT}",
            id="on-call-not-e164",
        ),
        pytest.param(
            {**MINIMAL, "max_call_s": 29},
            "max_call_s",
            "must be from 30 to 7200 seconds",
            id="max-call-29",
        ),
        pytest.param(
            {**MINIMAL, "max_call_s": 7201},
            "max_call_s",
            "must be from 30 to 7200 seconds",
            id="max-call-7201",
        ),
        pytest.param(
            {**MINIMAL, "max_call_s": 900.0}, "max_call_s", "expected an integer", id="max-float"
        ),
        pytest.param(
            {**MINIMAL, "max_call_s": True}, "max_call_s", "expected an integer", id="max-bool"
        ),
        pytest.param(
            {**MINIMAL, "silence_timeout_s": 4},
            "silence_timeout_s",
            "must be from 5 to 600 seconds",
            id="silence-4",
        ),
        pytest.param(
            {**MINIMAL, "silence_timeout_s": 601},
            "silence_timeout_s",
            "must be from 5 to 600 seconds",
            id="silence-601",
        ),
        pytest.param(
            {**MINIMAL, "vad_threshold": 1.0},
            "vad_threshold",
            "must be greater than 0 and less than 1",
            id="vad-threshold-1",
        ),
        pytest.param(
            {**MINIMAL, "vad_silence_ms": 50},
            "vad_silence_ms",
            "must be from 100 to 3000 milliseconds",
            id="vad-silence-50",
        ),
        pytest.param({**MINIMAL, "colour": "red"}, "colour", "unknown field", id="unknown-field"),
        pytest.param(
            {**MINIMAL, "function_secret_set": True},
            "function_secret_set",
            "unknown field (output only: send the secret itself, "
            "functionSecret over HTTP, function_secret in a TOML file)",
            id="output-only-field",
        ),
    ],
)
def test_each_invalid_field_is_reported(data: dict[str, Any], field: str, message: str) -> None:
    assert errors_of(lambda: parse_project(data)) == [FieldError(field, message)]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            with_tool(parameters={"type": "string"}),
            [FieldError("tools[0].parameters", SCHEMA_TEXT)],
            id="schema-not-object-type",
        ),
        pytest.param(
            with_tool(parameters=[]),
            [FieldError("tools[0].parameters", SCHEMA_TEXT)],
            id="schema-not-a-dict",
        ),
        pytest.param(
            with_tool(parameters={"type": "object", "properties": []}),
            [
                FieldError(
                    "tools[0].parameters.properties", "must be an object of property name to schema"
                )
            ],
            id="properties-not-a-dict",
        ),
        pytest.param(
            with_tool(parameters={"type": "object", "properties": {"zip": {"title": "ZIP"}}}),
            [FieldError("tools[0].parameters.properties.zip", PROPERTY_TEXT)],
            id="property-without-type",
        ),
        pytest.param(
            with_tool(parameters={"type": "object", "properties": {"zip": "string"}}),
            [FieldError("tools[0].parameters.properties.zip", PROPERTY_TEXT)],
            id="property-not-a-dict",
        ),
        pytest.param(
            with_tool(parameters={"type": "object", "required": "zip"}),
            [FieldError("tools[0].parameters.required", "must be a list of property names")],
            id="required-not-a-list",
        ),
        pytest.param(
            with_tool(parameters={"type": "object", "properties": {}, "required": [1]}),
            [FieldError("tools[0].parameters.required", "must be a list of property names")],
            id="required-not-strings",
        ),
        pytest.param(
            with_tool(
                parameters={
                    "type": "object",
                    "properties": {"zip": {"type": "string"}},
                    "required": ["zip", "city"],
                }
            ),
            [FieldError("tools[0].parameters.required", "'city' is not a key of properties")],
            id="required-names-missing-property",
        ),
        pytest.param(
            with_tool(parameters={"type": "object", "required": ["zip"]}),
            [FieldError("tools[0].parameters.required", "'zip' is not a key of properties")],
            id="required-without-properties",
        ),
        pytest.param(
            with_tool(name="book visit"),
            [FieldError("tools[0].name", f"'book visit' {TOOL_NAME_TEXT}")],
            id="tool-name-space",
        ),
        pytest.param(
            with_tool(name="t" * 65),
            [FieldError("tools[0].name", f"'{'t' * 57}...' {TOOL_NAME_TEXT}")],
            id="tool-name-65-chars",
        ),
        pytest.param(
            with_tool(description="d" * 1025),
            [FieldError("tools[0].description", "must be at most 1024 characters (got 1025)")],
            id="tool-description-1025-chars",
        ),
        pytest.param(
            with_tool(description=None, parameters=None),
            [
                FieldError("tools[0].description", "required"),
                FieldError("tools[0].parameters", "required"),
            ],
            id="tool-fields-missing",
        ),
        pytest.param(
            with_tool(strict=True),
            [FieldError("tools[0].strict", "unknown field")],
            id="tool-unknown-field",
        ),
        pytest.param(
            {**MINIMAL, "tools": [BOOK_VISIT, "book_visit"]},
            [FieldError("tools[1]", "expected an object")],
            id="tool-not-an-object",
        ),
        pytest.param(
            {**MINIMAL, "tools": [BOOK_VISIT, {**BOOK_VISIT, "name": "quote"}, BOOK_VISIT]},
            [FieldError("tools[2].name", "duplicate tool name 'book_visit' (also tools[0])")],
            id="duplicate-tool-names",
        ),
    ],
)
def test_tool_problems_are_reported(data: dict[str, Any], expected: list[FieldError]) -> None:
    assert errors_of(lambda: parse_project(data)) == expected


@pytest.mark.parametrize("name", ["end_call", "classify_call", "transfer_to_on_call"])
def test_a_tool_named_like_a_built_in_is_refused(name: str) -> None:
    data = {**MINIMAL, "function_url": "https://hooks.example.com/fn"}
    data["tools"] = [BOOK_VISIT, {**BOOK_VISIT, "name": name}]
    assert errors_of(lambda: parse_project(data)) == [
        FieldError("tools[1].name", f"{name!r} {RESERVED_TEXT}")
    ]


def test_the_reserved_names_are_the_call_actors_built_in_tools() -> None:
    from actors.call.tools import BUILTIN_TOOLS
    from engine.project_tools import RESERVED_TOOL_NAMES

    assert sorted(RESERVED_TOOL_NAMES) == sorted(tool["name"] for tool in BUILTIN_TOOLS)


def test_a_reserved_name_is_refused_by_a_patch_too() -> None:
    existing = parse_project(with_tool())
    changes = {"tools": [{**BOOK_VISIT, "name": "end_call"}]}
    assert errors_of(lambda: patch_project(existing, changes)) == [
        FieldError("tools[0].name", f"'end_call' {RESERVED_TEXT}")
    ]


@pytest.mark.parametrize(
    ("tag", "code"),
    [("en", "en"), ("en-US", "en"), ("EN", "en"), ("en_GB", "en"), ("zh-Hant-TW", "zh")],
)
def test_a_language_tag_is_stored_as_its_iso_639_1_code(tag: str, code: str) -> None:
    assert parse_project({**MINIMAL, "language": tag}).language == code


def test_tool_name_of_64_characters_and_description_of_1024_are_accepted() -> None:
    project = parse_project(with_tool(name="t" * 64, description="d" * 1024))
    assert project.tools[0].name == "t" * 64


def test_all_errors_are_reported_at_once() -> None:
    data = {
        "id": "Smith Plumbing",
        "timezone": "Mars/Base",
        "voice": "robot",
        "tools": [{"name": "a", "description": "", "parameters": {"type": "array"}}],
        "on_call_number": "555-1234",
        "colour": "red",
    }
    errors = errors_of(lambda: parse_project(data))
    assert [error.field for error in errors] == [
        "colour",
        "name",
        "id",
        "timezone",
        "voice",
        "on_call_number",
        "tools[0].parameters",
    ]
    assert str(ValidationFailed(errors[:2])) == "colour: unknown field; name: required"


def test_validation_failed_is_an_engine_error_listing_every_field() -> None:
    error = ValidationFailed([FieldError("id", "required"), FieldError("name", "required")])
    assert isinstance(error, EngineError)
    assert str(error) == "id: required; name: required"


def test_path_id_fills_a_missing_body_id() -> None:
    assert parse_project(without(MINIMAL, "id"), path_id="smith-plumbing").id == "smith-plumbing"


def test_path_id_matching_the_body_id_is_accepted() -> None:
    assert parse_project(MINIMAL, path_id="smith-plumbing").id == "smith-plumbing"


def test_path_id_differing_from_the_body_id_is_refused() -> None:
    errors = errors_of(lambda: parse_project(MINIMAL, path_id="jones-hvac"))
    assert errors == [FieldError("id", "does not match the id in the URL")]


def test_an_invalid_path_id_is_reported_as_the_id() -> None:
    errors = errors_of(lambda: parse_project(without(MINIMAL, "id"), path_id="Bad Id"))
    assert errors == [FieldError("id", f"'Bad Id' {ID_TEXT}")]


def test_patch_merges_and_keeps_the_other_fields() -> None:
    existing = parse_project(FULL)
    patched = patch_project(existing, {"greeting": "Hello!", "max_call_s": 600})
    assert patched == msgspec.structs.replace(existing, greeting="Hello!", max_call_s=600)
    assert patched.function_secret == SECRET


def test_patch_with_null_clears_optional_fields() -> None:
    existing = parse_project(FULL)
    patched = patch_project(
        existing,
        {"function_url": None, "function_secret": None, "on_call_number": None, "tools": []},
    )
    assert (patched.function_url, patched.function_secret, patched.on_call_number) == (
        None,
        None,
        None,
    )
    assert patched.tools == []


def test_tools_need_a_function_url() -> None:
    errors = errors_of(lambda: patch_project(parse_project(FULL), {"function_url": None}))
    assert errors == [FieldError("function_url", "required when the project has tools")]


def test_patch_null_for_a_field_that_is_not_optional_is_refused() -> None:
    errors = errors_of(lambda: patch_project(parse_project(FULL), {"voice": None}))
    assert errors == [FieldError("voice", "expected a string")]


def test_patch_replaces_the_tools_list_whole() -> None:
    patched = patch_project(parse_project(FULL), {"tools": [BOOK_VISIT]})
    assert [tool.name for tool in patched.tools] == ["book_visit"]


def test_patch_cannot_change_the_id() -> None:
    errors = errors_of(lambda: patch_project(parse_project(FULL), {"id": "jones-hvac"}))
    assert errors == [FieldError("id", "cannot be changed (it is 'smith-plumbing')")]


def test_patch_may_repeat_the_same_id() -> None:
    existing = parse_project(FULL)
    assert patch_project(existing, {"id": "smith-plumbing"}) == existing


def test_patch_reports_every_error_with_the_id_one() -> None:
    changes = {"id": "other", "timezone": "Mars/Base", "colour": "red"}
    errors = errors_of(lambda: patch_project(parse_project(FULL), changes))
    assert [error.field for error in errors] == ["id", "colour", "timezone"]


def test_public_dict_hides_the_secret() -> None:
    shown = parse_project(FULL).public_dict()
    assert "function_secret" not in shown
    assert shown["function_secret_set"] is True
    assert SECRET not in msgspec.json.encode(shown).decode()
    assert shown == {**without(FULL, "function_secret"), "function_secret_set": True}


def test_public_dict_says_when_no_secret_is_set() -> None:
    assert parse_project(MINIMAL).public_dict()["function_secret_set"] is False


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        pytest.param("+15551234567", True, id="us"),
        pytest.param("+1234567", True, id="7-digits"),
        pytest.param("+123456789012345", True, id="15-digits"),
        pytest.param("+123456", False, id="6-digits"),
        pytest.param("+1234567890123456", False, id="16-digits"),
        pytest.param("+05551234567", False, id="leading-zero"),
        pytest.param("15551234567", False, id="no-plus"),
        pytest.param("+1 555 123 4567", False, id="spaces"),
        pytest.param("+1-555-123-4567", False, id="hyphens"),
        pytest.param("+15551234567\n", False, id="trailing-newline"),
        pytest.param("+١٥٥٥١٢٣٤٥٦٧", False, id="non-ascii-digits"),
        pytest.param("", False, id="empty"),
    ],
)
def test_is_e164(text: str, valid: bool) -> None:
    assert is_e164(text) is valid


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param({"number": "+15551234567"}, PhoneNumber("+15551234567"), id="default"),
        pytest.param(
            {"number": "+15551234567", "system": "openai"},
            PhoneNumber("+15551234567", "openai"),
            id="openai",
        ),
        pytest.param(
            {"number": "+15551234567", "system": "vapi", "vapi_phone_number_id": "pn-1"},
            PhoneNumber("+15551234567", "vapi", "pn-1"),
            id="vapi",
        ),
    ],
)
def test_phone_number_systems(data: dict[str, Any], expected: PhoneNumber) -> None:
    assert parse_phone_number(data) == expected


def test_phone_number_defaults_to_openai() -> None:
    assert parse_phone_number({"number": "+15551234567"}).system == "openai"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param({}, [FieldError("number", "required")], id="number-missing"),
        pytest.param(
            {"number": 15551234567}, [FieldError("number", "expected a string")], id="not-string"
        ),
        pytest.param(
            {"number": "555-1234"},
            [FieldError("number", f"'555-1234' {E164_TEXT}")],
            id="not-e164",
        ),
        pytest.param(
            {"number": "+15551234567", "system": "OpenAI"},
            [FieldError("system", "'OpenAI' is not a system; use one of openai, vapi")],
            id="system-wrong-case",
        ),
        pytest.param(
            {"number": "+15551234567", "system": "twilio"},
            [FieldError("system", "'twilio' is not a system; use one of openai, vapi")],
            id="system-unknown",
        ),
        pytest.param(
            {"number": "555", "system": None, "project": "x"},
            [
                FieldError("project", "unknown field"),
                FieldError("number", f"'555' {E164_TEXT}"),
                FieldError("system", "expected a string"),
            ],
            id="several-at-once",
        ),
    ],
)
def test_phone_number_problems(data: dict[str, Any], expected: list[FieldError]) -> None:
    assert errors_of(lambda: parse_phone_number(data)) == expected


def test_decode_json_object_returns_the_object() -> None:
    assert decode_json_object(b'{"id": "smith", "max_call_s": 60}') == {
        "id": "smith",
        "max_call_s": 60,
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"", "not a JSON object: the body is empty", id="empty"),
        pytest.param(b"  \n", "not a JSON object: the body is empty", id="whitespace"),
        pytest.param(b"[1, 2]", "not a JSON object: got an array", id="array"),
        pytest.param(b'"smith"', "not a JSON object: got a string", id="string"),
        pytest.param(b"42", "not a JSON object: got a number", id="number"),
        pytest.param(b"true", "not a JSON object: got true", id="true"),
        pytest.param(b"null", "not a JSON object: got null", id="null"),
    ],
)
def test_decode_json_object_refuses_anything_else(body: bytes, message: str) -> None:
    assert errors_of(lambda: decode_json_object(body)) == [FieldError("body", message)]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{", id="truncated"),
        pytest.param(b"{'id': 1}", id="single-quotes"),
        pytest.param(b"{} {}", id="trailing-characters"),
        pytest.param(b"\xff", id="not-utf8"),
    ],
)
def test_decode_json_object_names_the_json_problem(body: bytes) -> None:
    [error] = errors_of(lambda: decode_json_object(body))
    # The detail after the prefix is msgspec's own wording, which its releases may change.
    assert error.field == "body"
    assert error.message.startswith("not a JSON object: ")
    assert len(error.message) > len("not a JSON object: ")


def test_the_iso_639_1_list_holds_its_184_codes_and_no_others() -> None:
    from engine.languages import ISO_639_1

    assert len(ISO_639_1) == 184
    assert {"en", "es", "zu", "bh"} <= ISO_639_1
    assert not {"xx", "yue", "EN"} & ISO_639_1
