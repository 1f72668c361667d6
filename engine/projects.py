"""Validation of what operators send about projects: pure, no I/O.

The admin HTTP API (JSON bodies) and ``afterhours project apply FILE.toml`` (TOML parsed
to a dict by the caller) both end here, in the engine's snake_case names: the API's
camelCase names are renamed to these first (engine/json_case.py, from ``PROJECT_FIELDS``
and ``NUMBER_FIELDS``), and its errors' field names back. Every problem is collected,
not just the first, so an operator fixes a whole file in one round:
``ValidationFailed.errors`` holds one ``FieldError`` per field, each naming the field
and what is allowed (engine/field_checks.py). The limits mirror the ``projects`` table
(``actors/store/sql/0002_projects_calls.sql``) and are stricter where the database would
accept values the engine cannot use. A project's tools are checked by
engine/project_tools.py, its phone numbers by engine/phone_numbers.py.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from engine.field_checks import (
    INTEGER,
    NUMBER,
    STRING,
    FieldError,
    Kind,
    Problem,
    ValidationFailed,
    check_field,
    length_problem,
    rule,
    shown,
    unknown_fields,
)
from engine.languages import iso_639_1
from engine.phone_numbers import e164_problem
from engine.pricing import REALTIME_PRICES, built_in_prices
from engine.project_tools import Tool, parse_tools
from engine.urls import split_url

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
# Who answers a caller of a Vapi number when Vapi does not take the call in time: this
# engine, or the project's on-call number (api/http/vapi_calls.py).
VAPI_FALLBACKS = ("engine", "on_call")
FUNCTION_TIMEOUT_MAX_S = 30.0
MAX_CALL_RANGE_S = (30, 7200)
SILENCE_TIMEOUT_RANGE_S = (5, 600)

_PROJECT_ID = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")
_REQUIRED = ("id", "name", "timezone")
_MODEL_MAX_CHARS = 64
# Output-only keys of ``Project.public_dict``: a client that sends a fetched project back
# gets told why the key is refused rather than a bare "unknown field".
# (Its name in the message is given both ways: a TOML file and the HTTP API both end here.)
_OUTPUT_ONLY = {
    "function_secret_set": "unknown field (output only: send the secret itself, "
    "functionSecret over HTTP, function_secret in a TOML file)"
}


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


# -- project fields -----------------------------------------------------------------------


def _build_project(data: Mapping[str, Any], errors: list[FieldError]) -> Project:
    """Check every field of ``data``, adding to ``errors``; the project if none."""
    errors.extend(unknown_fields(data, _SPECS.keys() | {"tools"}, explained=_OUTPUT_ONLY))
    errors.extend(FieldError(key, "required") for key in _REQUIRED if key not in data)
    values: dict[str, Any] = {}
    for key, (kind, nullable, problem) in _SPECS.items():
        if key not in data:
            continue
        value = data[key]
        if value is None and nullable:
            values[key] = None
        elif check_field(errors, key, value, kind, problem, nullable=nullable):
            # TOML and JSON both write 5 for 5.0: the record always holds a float.
            values[key] = float(value) if kind is NUMBER else value
            if key in _NORMALISED:
                values[key] = _NORMALISED[key](value)
    if "tools" in data:
        values["tools"] = parse_tools(data["tools"], errors)
        # The model would call the business's functions with nowhere to send them.
        if values["tools"] and not values.get("function_url") and not _has_error(errors, "tools"):
            errors.append(FieldError("function_url", "required when the project has tools"))
    if errors:
        raise ValidationFailed(errors)
    return Project(**values)


def _has_error(errors: list[FieldError], prefix: str) -> bool:
    return any(error.field.startswith(prefix) for error in errors)


@functools.cache
def _time_zones() -> frozenset[str]:
    # available_timezones() scans the tz database on disk each time it is called.
    return frozenset(zoneinfo.available_timezones())


_id_problem = rule(
    lambda value: _PROJECT_ID.fullmatch(value) is not None,
    "is not a project id: use 2 to 63 lowercase letters, digits and hyphens, starting with "
    "a letter or digit (e.g. smith-plumbing)",
)
_timezone_problem = rule(
    lambda value: value in _time_zones(), "is not an IANA time zone name (e.g. America/Chicago)"
)
_voice_problem = rule(
    lambda value: value in VOICES, f"is not a voice; use one of {', '.join(VOICES)}"
)
_language_problem = rule(
    lambda value: iso_639_1(value) is not None,
    "is not an ISO 639-1 language code (two letters, e.g. en or es; a tag such as en-US "
    "is stored as its language, en)",
)
_vapi_fallback_problem = rule(
    lambda value: value in VAPI_FALLBACKS,
    f"is not a fallback; use one of {', '.join(VAPI_FALLBACKS)}",
)


def _model_problem(value: str) -> str | None:
    # Only models with built-in prices: a call's cost must not silently use another
    # model's. (OPENAI_REALTIME_MODEL may also be priced by PRICES_FILE.)
    if len(value) > _MODEL_MAX_CHARS or built_in_prices(value) is None:
        return (
            f"{shown(value)} is not a Realtime model with built-in prices; use one of "
            f"{', '.join(REALTIME_PRICES)} (or a dated snapshot of one), or leave it out "
            "for OPENAI_REALTIME_MODEL"
        )
    return None


def _name_problem(value: str) -> str | None:
    if not value.strip():
        return "must not be empty"
    return length_problem(200)(value)


def _url_problem(value: str) -> str | None:
    # The URL is not echoed back: a query parameter may carry a token.
    parts = split_url(value)
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


def _ms_problem(low: int, high: int) -> Problem:
    def problem(value: int) -> str | None:
        return None if low <= value <= high else f"must be from {low} to {high} milliseconds"

    return problem


def _range_problem(low: int, high: int) -> Problem:
    def problem(value: int) -> str | None:
        return None if low <= value <= high else f"must be from {low} to {high} seconds"

    return problem


# Field -> (kind, nullable, constraint); "tools" is nested: engine/project_tools.py.
_SPECS: dict[str, tuple[Kind, bool, Problem]] = {
    "id": (STRING, False, _id_problem),
    "name": (STRING, False, _name_problem),
    "timezone": (STRING, False, _timezone_problem),
    "greeting": (STRING, False, length_problem(1000)),
    "instructions": (STRING, False, length_problem(20_000)),
    "voice": (STRING, False, _voice_problem),
    "language": (STRING, False, _language_problem),
    "model": (STRING, True, _model_problem),
    "function_url": (STRING, True, _url_problem),
    "function_secret": (STRING, True, _secret_problem),
    "function_timeout_s": (NUMBER, False, _timeout_problem),
    "on_call_number": (STRING, True, e164_problem),
    "max_call_s": (INTEGER, False, _range_problem(*MAX_CALL_RANGE_S)),
    "silence_timeout_s": (INTEGER, False, _range_problem(*SILENCE_TIMEOUT_RANGE_S)),
    "vad_threshold": (NUMBER, False, _vad_threshold_problem),
    "vad_silence_ms": (INTEGER, False, _ms_problem(100, 3000)),
    "vad_prefix_padding_ms": (INTEGER, False, _ms_problem(0, 2000)),
    "vapi_fallback": (STRING, False, _vapi_fallback_problem),
}


# Every name a project body may hold, as the engine names it (snake_case, as in a TOML
# file); the HTTP API's camelCase names are derived from these (engine/json_case.py).
PROJECT_FIELDS: tuple[str, ...] = (*_SPECS, "tools", *_OUTPUT_ONLY)


# Fields stored in a canonical form once valid.
_NORMALISED: dict[str, Callable[[Any], Any]] = {"language": iso_639_1}
