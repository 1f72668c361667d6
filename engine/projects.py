"""Validation of what operators send about projects: pure, no I/O.

The admin HTTP API (JSON bodies) and ``afterhours project apply FILE.toml`` (TOML parsed
to a dict by the caller) both end here, in the engine's snake_case names: the API's
camelCase names are renamed to these first (engine/json_case.py, from ``PROJECT_FIELDS``
and ``NUMBER_FIELDS``), and its errors' field names back. Every problem is collected,
not just the first, so an operator fixes a whole file in one round:
``ValidationFailed.errors`` holds one ``FieldError`` per field, each naming the field
and what is allowed. The limits mirror the ``projects`` and ``phone_numbers`` tables
(``actors/store/sql/0002_projects_calls.sql``) and are stricter where the database would
accept values the engine cannot use.
"""

from __future__ import annotations

import copy
import functools
import re
import zoneinfo
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec

from engine.errors import EngineError
from engine.languages import iso_639_1
from engine.pricing import REALTIME_PRICES, built_in_prices

VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
SYSTEMS = ("openai", "vapi")
# Who answers a caller of a Vapi number when Vapi does not take the call in time: this
# engine, or the project's on-call number (api/http/vapi_calls.py).
VAPI_FALLBACKS = ("engine", "on_call")
_VAPI_ID_MAX_CHARS = 64
FUNCTION_TIMEOUT_MAX_S = 30.0
MAX_CALL_RANGE_S = (30, 7200)
SILENCE_TIMEOUT_RANGE_S = (5, 600)

_PROJECT_ID = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# [0-9] rather than \d: \d also matches non-ASCII digits, which no phone network dials.
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
# Keys a JSON schema may use instead of "type" to say what a property holds.
_SCHEMA_KINDS = ("type", "enum", "anyOf", "oneOf", "$ref")
_SHOWN_MAX_CHARS = 60
_REQUIRED = ("id", "name", "timezone")
_TOOL_FIELDS = ("name", "description", "parameters")
# The engine's own tools (actors/call/tools.py BUILTIN_TOOLS), sent beside every project's: a
# project tool of the same name would be sent twice, and its calls taken for the
# engine's (a test checks this list against the call actor's).
RESERVED_TOOL_NAMES = ("classify_call", "transfer_to_on_call", "end_call")
_MODEL_MAX_CHARS = 64
# Output-only keys of ``Project.public_dict``: a client that sends a fetched project back
# gets told why the key is refused rather than a bare "unknown field".
# (Its name in the message is given both ways: a TOML file and the HTTP API both end here.)
_OUTPUT_ONLY = {
    "function_secret_set": "unknown field (output only: send the secret itself, "
    "functionSecret over HTTP, function_secret in a TOML file)"
}


class Tool(msgspec.Struct, frozen=True):
    """A function the model may call during a call; ``parameters`` is a JSON schema."""

    name: str
    description: str
    parameters: dict[str, Any]


class Project(msgspec.Struct, frozen=True, kw_only=True):
    """One business the engine answers for: a row of ``projects``."""

    id: str
    name: str
    timezone: str
    greeting: str = ""
    instructions: str = ""
    voice: str = "marin"
    language: str = "en"  # ISO 639-1 (en-US is stored as en)
    # The Realtime model for this project's calls; None: OPENAI_REALTIME_MODEL.
    model: str | None = None
    tools: list[Tool] = []
    function_url: str | None = None
    function_secret: str | None = None
    function_timeout_s: float = 5.0
    on_call_number: str | None = None
    max_call_s: int = 900
    silence_timeout_s: int = 30
    # Server VAD (when the caller's speech starts and ends): raise the threshold on noisy
    # lines, the silence on callers who pause mid-sentence.
    vad_threshold: float = 0.5
    vad_silence_ms: int = 500
    vad_prefix_padding_ms: int = 300
    vapi_fallback: Literal["engine", "on_call"] = "engine"

    def public_dict(self) -> dict[str, Any]:
        """Every field for API output, except that the secret becomes
        ``function_secret_set``: the secret is write-only."""
        data: dict[str, Any] = msgspec.to_builtins(self)
        del data["function_secret"]
        data["function_secret_set"] = self.function_secret is not None
        return data


class PhoneNumber(msgspec.Struct, frozen=True):
    """A number that rings a project, and which realtime system answers it. A number on
    ``vapi`` is created on Vapi's side with ``vapi_phone_number_id`` (Vapi's id for the
    number, required to answer there) and optionally ``vapi_assistant_id``."""

    number: str
    system: Literal["openai", "vapi"] = "openai"
    vapi_phone_number_id: str | None = None
    vapi_assistant_id: str | None = None


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid field: ``field`` is a path such as ``tools[1].parameters``."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class ValidationFailed(EngineError):
    """What an operator sent is invalid; ``errors`` lists every problem found."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(error) for error in errors))


def is_e164(text: str) -> bool:
    """True for ``+`` then 7 to 15 digits, the first not 0 (``+15551234567``)."""
    return _E164.fullmatch(text) is not None


def decode_json_object(body: bytes) -> dict[str, Any]:
    """``body`` as a JSON object, or ``ValidationFailed`` on field ``body``."""
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError as error:
        detail = "the body is empty" if not body.strip() else str(error)
        raise ValidationFailed([FieldError("body", f"not a JSON object: {detail}")]) from None
    except RecursionError:
        # msgspec counts nesting against the interpreter's recursion limit (about 1000
        # levels) and stops there; a project is a few levels deep, so this is no project.
        raise ValidationFailed(
            [FieldError("body", "not a JSON object: nested too deeply")]
        ) from None
    if not isinstance(value, dict):
        kind = _json_kind(value)
        raise ValidationFailed([FieldError("body", f"not a JSON object: got {kind}")])
    return value


def parse_project(data: Mapping[str, Any], *, path_id: str | None = None) -> Project:
    """Validate a whole project (POST, PUT or a TOML file). With ``path_id`` (the id in
    the URL) the body's id may be left out, and must match when given."""
    errors: list[FieldError] = []
    merged = dict(data)
    if path_id is not None:
        if "id" not in merged:
            merged["id"] = path_id
        elif isinstance(merged["id"], str) and merged["id"] != path_id:
            errors.append(FieldError("id", "does not match the id in the URL"))
            merged["id"] = path_id
    return _build_project(merged, errors)


def patch_project(existing: Project, changes: Mapping[str, Any]) -> Project:
    """``existing`` with the top-level keys of ``changes`` replaced, validated like
    ``parse_project``. A list such as ``tools`` is replaced whole; null clears an
    optional field; the id cannot change."""
    errors: list[FieldError] = []
    merged: dict[str, Any] = msgspec.to_builtins(existing)
    merged.update(changes)
    if "id" in changes and changes["id"] != existing.id:
        errors.append(FieldError("id", f"cannot be changed (it is {existing.id!r})"))
        merged["id"] = existing.id
    return _build_project(merged, errors)


def parse_phone_number(data: Mapping[str, Any]) -> PhoneNumber:
    """Validate a phone number assignment: ``number`` (E.164), ``system`` and the Vapi ids."""
    errors = _unknown_fields(data, ("number", *_NUMBER_FIELDS))
    if "number" not in data:
        errors.append(FieldError("number", "required"))
    else:
        _check_field(errors, "number", data["number"], _STRING, _e164_problem)
    errors.extend(_number_field_errors(data))
    number = None if errors else _number_of(data["number"], data)
    if number is not None:
        errors.extend(_vapi_number_errors(number))
    if errors or number is None:
        raise ValidationFailed(errors)
    return number


def patch_phone_number(existing: PhoneNumber, changes: Mapping[str, Any]) -> PhoneNumber:
    """``existing`` with ``changes`` (``system``, ``vapi_phone_number_id``,
    ``vapi_assistant_id``; null clears an id) applied, validated as a whole: a number
    moved to ``vapi`` needs Vapi's id for it, sent now or already stored."""
    errors = _unknown_fields(changes, _NUMBER_FIELDS)
    if "number" in changes:
        errors.append(FieldError("number", "the number is the path's: release it and add another"))
    errors.extend(_number_field_errors(changes))
    if errors:
        raise ValidationFailed(errors)
    merged = {field: getattr(existing, field) for field in _NUMBER_FIELDS} | dict(changes)
    number = _number_of(existing.number, merged)
    errors = _vapi_number_errors(number)
    if errors:
        raise ValidationFailed(errors)
    return number


_NUMBER_FIELDS = ("system", "vapi_phone_number_id", "vapi_assistant_id")


def _number_field_errors(data: Mapping[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    if "system" in data:
        _check_field(errors, "system", data["system"], _STRING, _system_problem)
    for field in ("vapi_phone_number_id", "vapi_assistant_id"):
        if data.get(field) is not None:
            _check_field(errors, field, data[field], _STRING, _vapi_id_problem)
    return errors


def _number_of(number: str, data: Mapping[str, Any]) -> PhoneNumber:
    return PhoneNumber(
        number,
        data.get("system") or "openai",
        data.get("vapi_phone_number_id") or None,
        data.get("vapi_assistant_id") or None,
    )


def _vapi_number_errors(number: PhoneNumber) -> list[FieldError]:
    if number.system == "vapi" and number.vapi_phone_number_id is None:
        return [
            FieldError(
                "vapi_phone_number_id",
                "required for a number on vapi: Vapi's id for this number (its dashboard, "
                "Phone Numbers), which the request that hands it a call names",
            )
        ]
    return []


# -- project fields -----------------------------------------------------------------------

_Problem = Callable[[Any], "str | None"]


@dataclass(frozen=True, slots=True)
class _Kind:
    """A JSON/TOML value type: how to recognise it and how to name it in messages."""

    text: str
    accepts: Callable[[Any], bool]


_STRING = _Kind("a string", lambda value: isinstance(value, str))
# bool is an int subclass in Python, but true is not a number of seconds.
_INTEGER = _Kind("an integer", lambda value: isinstance(value, int) and type(value) is not bool)
_NUMBER = _Kind(
    "a number", lambda value: isinstance(value, int | float) and type(value) is not bool
)


def _build_project(data: Mapping[str, Any], errors: list[FieldError]) -> Project:
    """Check every field of ``data``, adding to ``errors``; the project if none."""
    errors.extend(_unknown_fields(data, _SPECS.keys() | {"tools"}))
    errors.extend(FieldError(key, "required") for key in _REQUIRED if key not in data)
    values: dict[str, Any] = {}
    for key, (kind, nullable, problem) in _SPECS.items():
        if key not in data:
            continue
        value = data[key]
        if value is None and nullable:
            values[key] = None
        elif _check_field(errors, key, value, kind, problem, nullable=nullable):
            # TOML and JSON both write 5 for 5.0: the record always holds a float.
            values[key] = float(value) if kind is _NUMBER else value
            if key in _NORMALISED:
                values[key] = _NORMALISED[key](value)
    if "tools" in data:
        values["tools"] = _parse_tools(data["tools"], errors)
        # The model would call the business's functions with nowhere to send them.
        if values["tools"] and not values.get("function_url") and not _has_error(errors, "tools"):
            errors.append(FieldError("function_url", "required when the project has tools"))
    if errors:
        raise ValidationFailed(errors)
    return Project(**values)


def _has_error(errors: list[FieldError], prefix: str) -> bool:
    return any(error.field.startswith(prefix) for error in errors)


def _check_field(
    errors: list[FieldError],
    field: str,
    value: Any,
    kind: _Kind,
    problem: _Problem,
    *,
    nullable: bool = False,
) -> bool:
    """Add at most one error for ``field``: its type, else its constraint."""
    if not kind.accepts(value):
        either = " or null" if nullable else ""
        errors.append(FieldError(field, f"expected {kind.text}{either}"))
        return False
    message = problem(value)
    if message is not None:
        errors.append(FieldError(field, message))
        return False
    return True


def _unknown_fields(
    data: Mapping[str, Any], known: Container[str], *, prefix: str = ""
) -> list[FieldError]:
    return [
        FieldError(f"{prefix}{key}", _OUTPUT_ONLY.get(key, "unknown field"))
        for key in data
        if key not in known
    ]


def _shown(text: str) -> str:
    """``repr(text)``, shortened so one bad value cannot flood a one-line message."""
    if len(text) > _SHOWN_MAX_CHARS:
        text = text[: _SHOWN_MAX_CHARS - 3] + "..."
    return repr(text)


def _rule(valid: Callable[[str], bool], text: str) -> _Problem:
    """A check whose message shows the bad value, then ``text`` saying what is allowed."""

    def problem(value: str) -> str | None:
        return None if valid(value) else f"{_shown(value)} {text}"

    return problem


@functools.cache
def _time_zones() -> frozenset[str]:
    # available_timezones() scans the tz database on disk each time it is called.
    return frozenset(zoneinfo.available_timezones())


_id_problem = _rule(
    lambda value: _PROJECT_ID.fullmatch(value) is not None,
    "is not a project id: use 2 to 63 lowercase letters, digits and hyphens, starting with "
    "a letter or digit (e.g. smith-plumbing)",
)
_timezone_problem = _rule(
    lambda value: value in _time_zones(), "is not an IANA time zone name (e.g. America/Chicago)"
)
_voice_problem = _rule(
    lambda value: value in VOICES, f"is not a voice; use one of {', '.join(VOICES)}"
)
_language_problem = _rule(
    lambda value: iso_639_1(value) is not None,
    "is not an ISO 639-1 language code (two letters, e.g. en or es; a tag such as en-US "
    "is stored as its language, en)",
)
_e164_problem = _rule(is_e164, "is not an E.164 number (+ and 7-15 digits, e.g. +15551234567)")
_system_problem = _rule(
    lambda value: value in SYSTEMS, f"is not a system; use one of {', '.join(SYSTEMS)}"
)
_vapi_fallback_problem = _rule(
    lambda value: value in VAPI_FALLBACKS,
    f"is not a fallback; use one of {', '.join(VAPI_FALLBACKS)}",
)
_vapi_id_problem = _rule(
    lambda value: (
        0 < len(value) <= _VAPI_ID_MAX_CHARS
        and value.isprintable()
        and not any(c.isspace() for c in value)
    ),
    f"is not a Vapi id: 1 to {_VAPI_ID_MAX_CHARS} printable characters, no spaces",
)
_tool_name_problem = _rule(
    lambda value: _TOOL_NAME.fullmatch(value) is not None,
    "is not a tool name: use 1 to 64 letters, digits, _ or - (e.g. book_visit)",
)


def _tool_name_reserved(value: str) -> str | None:
    if value in RESERVED_TOOL_NAMES:
        return (
            f"{value!r} is reserved for the engine's own tools "
            f"({', '.join(RESERVED_TOOL_NAMES)}): choose another name"
        )
    return _tool_name_problem(value)


def _model_problem(value: str) -> str | None:
    # Only models with built-in prices: a call's cost must not silently use another
    # model's. (OPENAI_REALTIME_MODEL may also be priced by PRICES_FILE.)
    if len(value) > _MODEL_MAX_CHARS or built_in_prices(value) is None:
        return (
            f"{_shown(value)} is not a Realtime model with built-in prices; use one of "
            f"{', '.join(REALTIME_PRICES)} (or a dated snapshot of one), or leave it out "
            "for OPENAI_REALTIME_MODEL"
        )
    return None


def _name_problem(value: str) -> str | None:
    if not value.strip():
        return "must not be empty"
    return _length_problem(200)(value)


def _length_problem(most: int) -> _Problem:
    def problem(value: str) -> str | None:
        too_long = len(value) > most
        return f"must be at most {most} characters (got {len(value)})" if too_long else None

    return problem


def _url_problem(value: str) -> str | None:
    # The URL is not echoed back: a query parameter may carry a token.
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "expected a URL starting with http:// or https:// that names a host"
    return None


def _secret_problem(value: str) -> str | None:
    # Never echoes the value: it is a secret even when it is invalid.
    return "must not be empty (leave it out or send null for no secret)" if not value else None


# The numeric messages leave out the value sent: a JSON integer may have thousands of
# digits, which neither float() nor str() accepts.
def _timeout_problem(value: float) -> str | None:
    # "not 0 < value <= max" also rejects NaN, which compares false with everything.
    if not 0 < value <= FUNCTION_TIMEOUT_MAX_S:
        return f"must be greater than 0 and at most {FUNCTION_TIMEOUT_MAX_S:g} seconds"
    return None


def _vad_threshold_problem(value: float) -> str | None:
    return None if 0 < value < 1 else "must be greater than 0 and less than 1"


def _ms_problem(low: int, high: int) -> _Problem:
    def problem(value: int) -> str | None:
        return None if low <= value <= high else f"must be from {low} to {high} milliseconds"

    return problem


def _range_problem(low: int, high: int) -> _Problem:
    def problem(value: int) -> str | None:
        return None if low <= value <= high else f"must be from {low} to {high} seconds"

    return problem


# Field -> (kind, nullable, constraint); "tools" is nested and checked by _parse_tools.
_SPECS: dict[str, tuple[_Kind, bool, _Problem]] = {
    "id": (_STRING, False, _id_problem),
    "name": (_STRING, False, _name_problem),
    "timezone": (_STRING, False, _timezone_problem),
    "greeting": (_STRING, False, _length_problem(1000)),
    "instructions": (_STRING, False, _length_problem(20_000)),
    "voice": (_STRING, False, _voice_problem),
    "language": (_STRING, False, _language_problem),
    "model": (_STRING, True, _model_problem),
    "function_url": (_STRING, True, _url_problem),
    "function_secret": (_STRING, True, _secret_problem),
    "function_timeout_s": (_NUMBER, False, _timeout_problem),
    "on_call_number": (_STRING, True, _e164_problem),
    "max_call_s": (_INTEGER, False, _range_problem(*MAX_CALL_RANGE_S)),
    "silence_timeout_s": (_INTEGER, False, _range_problem(*SILENCE_TIMEOUT_RANGE_S)),
    "vad_threshold": (_NUMBER, False, _vad_threshold_problem),
    "vad_silence_ms": (_INTEGER, False, _ms_problem(100, 3000)),
    "vad_prefix_padding_ms": (_INTEGER, False, _ms_problem(0, 2000)),
    "vapi_fallback": (_STRING, False, _vapi_fallback_problem),
}


# Every name a project body may hold, as the engine names it (snake_case, as in a TOML
# file); the HTTP API's camelCase names are derived from these (engine/json_case.py).
PROJECT_FIELDS: tuple[str, ...] = (*_SPECS, "tools", *_OUTPUT_ONLY)
NUMBER_FIELDS: tuple[str, ...] = ("number", *_NUMBER_FIELDS)


# Fields stored in a canonical form once valid.
_NORMALISED: dict[str, Callable[[Any], Any]] = {"language": iso_639_1}


# -- tools --------------------------------------------------------------------------------


def _parse_tools(value: Any, errors: list[FieldError]) -> list[Tool]:
    if not isinstance(value, list):
        errors.append(FieldError("tools", "expected a list"))
        return []
    tools: list[Tool] = []
    first_index: dict[str, int] = {}
    for index, item in enumerate(value):
        tool = _parse_tool(f"tools[{index}]", item, errors)
        if tool is None:
            continue
        if tool.name in first_index:
            errors.append(
                FieldError(
                    f"tools[{index}].name",
                    f"duplicate tool name {tool.name!r} (also tools[{first_index[tool.name]}])",
                )
            )
        first_index.setdefault(tool.name, index)
        tools.append(tool)
    return tools


def _parse_tool(path: str, item: Any, errors: list[FieldError]) -> Tool | None:
    if not isinstance(item, dict):
        errors.append(FieldError(path, "expected an object"))
        return None
    found = _unknown_fields(item, _TOOL_FIELDS, prefix=f"{path}.")
    found.extend(FieldError(f"{path}.{key}", "required") for key in _TOOL_FIELDS if key not in item)
    if "name" in item:
        _check_field(found, f"{path}.name", item["name"], _STRING, _tool_name_reserved)
    if "description" in item:
        description = item["description"]
        _check_field(found, f"{path}.description", description, _STRING, _length_problem(1024))
    if "parameters" in item:
        found.extend(_schema_errors(f"{path}.parameters", item["parameters"]))
    errors.extend(found)
    if found:
        return None
    # A copy, so that the caller changing its dict later cannot change a frozen record.
    return Tool(item["name"], item["description"], copy.deepcopy(item["parameters"]))


def _schema_errors(field: str, schema: Any) -> list[FieldError]:
    """The problems that would make the realtime API refuse ``schema`` as a tool's
    parameters; a plausibility check, not a full JSON-schema validator."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return [FieldError(field, 'must be a JSON-schema object: {"type": "object", ...}')]
    found: list[FieldError] = []
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        found.append(
            FieldError(f"{field}.properties", "must be an object of property name to schema")
        )
        properties = {}
    for key, property_schema in properties.items():
        if not isinstance(property_schema, dict) or not any(
            kind in property_schema for kind in _SCHEMA_KINDS
        ):
            found.append(
                FieldError(
                    f"{field}.properties.{key}",
                    'must be a schema with "type" (or "enum", "anyOf", "oneOf", "$ref")',
                )
            )
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(name, str) for name in required):
        return [*found, FieldError(f"{field}.required", "must be a list of property names")]
    found.extend(
        FieldError(f"{field}.required", f"{_shown(name)} is not a key of properties")
        for name in required
        if name not in properties
    )
    return found


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    kinds = {list: "an array", str: "a string", type(None): "null"}
    return kinds.get(type(value), "a number")
