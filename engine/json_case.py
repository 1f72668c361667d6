"""One JSON casing across the HTTP API: camelCase, as the analytics API has always
answered (``callSid``, ``durationS``, ``costUsd``). Pure, no I/O, no third-party import:
the admin CLI loads it before anything else.

The engine's own names stay snake_case: Python attributes, database columns and the
project TOML files (TOML's convention). ``camel`` is the one place a snake name becomes
its API name, so the two can never drift apart field by field; a unit suffix keeps its
place (``function_timeout_s`` is ``functionTimeoutS``).

Requests may still use the old snake_case names for one release (``from_api``): each
old name used is reported so that the caller can be told (a ``Deprecation`` header) and
the operator warned; one field sent under both names is refused, since neither could be
said to win.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping

_UPPER = re.compile(r"(?<=[a-z0-9])([A-Z])")
_PATH_HEAD = re.compile(r"[^.\[]+")


def camel(name: str) -> str:
    """``on_call_number`` -> ``onCallNumber``; a name without ``_`` is unchanged."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def snake(name: str) -> str:
    """``onCallNumber`` -> ``on_call_number``: the inverse of ``camel`` on its results."""
    return _UPPER.sub(r"_\1", name).lower()


def camel_keys(value: Any, *, opaque: Collection[str] = ()) -> Any:
    """``value`` (JSON-ready) with every object key in camelCase, at any depth, except
    the values under a key in ``opaque`` (snake names), kept as they are: what someone
    else named (a tool's JSON schema, the model's arguments to a function)."""
    if isinstance(value, list):
        return [camel_keys(item, opaque=opaque) for item in value]
    if isinstance(value, dict):
        return {
            camel(key): item if key in opaque else camel_keys(item, opaque=opaque)
            for key, item in value.items()
        }
    return value


class BothNames(ValueError):
    """A request named one field twice, by its API name and its old one."""

    def __init__(self, field: str, old: str) -> None:
        self.field = field  # the API name, as the error names it
        super().__init__(f"{field} and {old} are the same field (its old name): send {field} only")


def from_api(data: Mapping[str, Any], fields: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
    """``data`` (a request's JSON object) with the API names of ``fields`` (snake names)
    back in snake case, and the old names it used, in order. A key that is neither is
    kept as sent, so that validation names it as the caller wrote it. ``BothNames`` when
    one field comes under both names."""
    by_api = {camel(field): field for field in fields}
    old_names = {field for field in by_api.values() if camel(field) != field}
    renamed: dict[str, Any] = {}
    old_used: list[str] = []
    for key, value in data.items():
        field = by_api.get(key, key)
        if key in old_names:
            old_used.append(key)
        if field in renamed:
            raise BothNames(camel(field), field)
        renamed[field] = value
    return renamed, old_used


def field_to_api(path: str, fields: Collection[str]) -> str:
    """A validation error's field path (``on_call_number``, ``tools[1].parameters``) as
    the API names it: its first name in camelCase when it is one of ``fields``."""
    head = _PATH_HEAD.match(path)
    if head is None or head.group() not in fields:
        return path
    return camel(head.group()) + path[head.end() :]


def field_from_api(path: str) -> str:
    """An API field path back in snake case (its first name), for a TOML file's reader."""
    head = _PATH_HEAD.match(path)
    if head is None:
        return path
    return snake(head.group()) + path[head.end() :]
