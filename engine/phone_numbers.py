"""The phone numbers that ring a project, and which realtime system answers each:
validated, pure, no I/O (engine/field_checks.py names the problems).

A number is E.164; it is answered by this engine (``openai``) or by Vapi (``vapi``, which
needs Vapi's id for the number). The limits mirror the ``phone_numbers`` table
(``actors/store/sql/0002_projects_calls.sql``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from engine.field_checks import (
    STRING,
    FieldError,
    ValidationFailed,
    check_field,
    rule,
    unknown_fields,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

SYSTEMS = ("openai", "vapi")
_VAPI_ID_MAX_CHARS = 64
# [0-9] rather than \d: \d also matches non-ASCII digits, which no phone network dials.
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


class PhoneNumber(msgspec.Struct, frozen=True):
    """A number that rings a project, and which realtime system answers it. A number on
    ``vapi`` is created on Vapi's side with ``vapi_phone_number_id`` (Vapi's id for the
    number, required to answer there) and optionally ``vapi_assistant_id``."""

    number: str
    system: Literal["openai", "vapi"] = "openai"
    vapi_phone_number_id: str | None = None
    vapi_assistant_id: str | None = None


def is_e164(text: str) -> bool:
    """True for ``+`` then 7 to 15 digits, the first not 0 (``+15551234567``)."""
    return _E164.fullmatch(text) is not None


e164_problem = rule(is_e164, "is not an E.164 number (+ and 7-15 digits, e.g. +15551234567)")
_system_problem = rule(
    lambda value: value in SYSTEMS, f"is not a system; use one of {', '.join(SYSTEMS)}"
)
_vapi_id_problem = rule(
    lambda value: (
        0 < len(value) <= _VAPI_ID_MAX_CHARS
        and value.isprintable()
        and not any(c.isspace() for c in value)
    ),
    f"is not a Vapi id: 1 to {_VAPI_ID_MAX_CHARS} printable characters, no spaces",
)


def parse_phone_number(data: Mapping[str, Any]) -> PhoneNumber:
    """Validate a phone number assignment: ``number`` (E.164), ``system`` and the Vapi ids."""
    errors = unknown_fields(data, ("number", *_NUMBER_FIELDS))
    if "number" not in data:
        errors.append(FieldError("number", "required"))
    else:
        check_field(errors, "number", data["number"], STRING, e164_problem)
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
    errors = unknown_fields(changes, _NUMBER_FIELDS)
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
        check_field(errors, "system", data["system"], STRING, _system_problem)
    for field in ("vapi_phone_number_id", "vapi_assistant_id"):
        if data.get(field) is not None:
            check_field(errors, field, data[field], STRING, _vapi_id_problem)
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


# Every name a number body may hold, as the engine names it (the HTTP API's camelCase
# names are derived from these: engine/json_case.py).
NUMBER_FIELDS: tuple[str, ...] = ("number", *_NUMBER_FIELDS)
