"""How a field an operator sent is checked, and its problem named: pure, no I/O.

Shared by the project (engine/projects.py), its tools (engine/project_tools.py) and its
phone numbers (engine/phone_numbers.py): a field is first checked for its type
(``Kind``), then for its constraint (a ``Problem``: the message, or None). Every problem
is collected as a ``FieldError`` naming the field, so an operator fixes a whole file in
one round; ``ValidationFailed`` carries them all.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from engine.errors import EngineError

SHOWN_MAX_CHARS = 60

Problem = Callable[[Any], "str | None"]


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


@dataclass(frozen=True, slots=True)
class Kind:
    """A JSON/TOML value type: how to recognise it and how to name it in messages."""

    text: str
    accepts: Callable[[Any], bool]


STRING = Kind("a string", lambda value: isinstance(value, str))
# bool is an int subclass in Python, but true is not a number of seconds.
INTEGER = Kind("an integer", lambda value: isinstance(value, int) and type(value) is not bool)
NUMBER = Kind("a number", lambda value: isinstance(value, int | float) and type(value) is not bool)


def check_field(
    errors: list[FieldError],
    field: str,
    value: Any,
    kind: Kind,
    problem: Problem,
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


def unknown_fields(
    data: Mapping[str, Any],
    known: Container[str],
    *,
    prefix: str = "",
    explained: Mapping[str, str] | None = None,
) -> list[FieldError]:
    """A ``FieldError`` for each key not ``known``; ``explained`` says why, for keys that
    deserve more than "unknown field" (an output-only one sent back, say)."""
    explained = explained or {}
    return [
        FieldError(f"{prefix}{key}", explained.get(key, "unknown field"))
        for key in data
        if key not in known
    ]


def shown(text: str) -> str:
    """``repr(text)``, shortened so one bad value cannot flood a one-line message."""
    if len(text) > SHOWN_MAX_CHARS:
        text = text[: SHOWN_MAX_CHARS - 3] + "..."
    return repr(text)


def rule(valid: Callable[[str], bool], text: str) -> Problem:
    """A check whose message shows the bad value, then ``text`` saying what is allowed."""

    def problem(value: str) -> str | None:
        return None if valid(value) else f"{shown(value)} {text}"

    return problem


def length_problem(most: int) -> Problem:
    def problem(value: str) -> str | None:
        too_long = len(value) > most
        return f"must be at most {most} characters (got {len(value)})" if too_long else None

    return problem


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    kinds = {list: "an array", str: "a string", type(None): "null"}
    return kinds.get(type(value), "a number")
