"""A project's tools: the functions the model may call during its calls, each with a
JSON schema of its parameters; validated, pure, no I/O (engine/field_checks.py names the
problems).
"""

from __future__ import annotations

import copy
import re
from typing import Any

import msgspec

from engine.field_checks import (
    STRING,
    FieldError,
    check_field,
    length_problem,
    rule,
    shown,
    unknown_fields,
)

_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Keys a JSON schema may use instead of "type" to say what a property holds.
_SCHEMA_KINDS = ("type", "enum", "anyOf", "oneOf", "$ref")
_TOOL_FIELDS = ("name", "description", "parameters")
# The engine's own tools (actors/call/tools.py BUILTIN_TOOLS), sent beside every project's: a
# project tool of the same name would be sent twice, and its calls taken for the
# engine's (a test checks this list against the call actor's).
RESERVED_TOOL_NAMES = ("classify_call", "transfer_to_on_call", "end_call")


class Tool(msgspec.Struct, frozen=True):
    """A function the model may call during a call; ``parameters`` is a JSON schema."""

    name: str
    description: str
    parameters: dict[str, Any]


_tool_name_problem = rule(
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


def parse_tools(value: Any, errors: list[FieldError]) -> list[Tool]:
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
    found = unknown_fields(item, _TOOL_FIELDS, prefix=f"{path}.")
    found.extend(FieldError(f"{path}.{key}", "required") for key in _TOOL_FIELDS if key not in item)
    if "name" in item:
        check_field(found, f"{path}.name", item["name"], STRING, _tool_name_reserved)
    if "description" in item:
        description = item["description"]
        check_field(found, f"{path}.description", description, STRING, length_problem(1024))
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
        FieldError(f"{field}.required", f"{shown(name)} is not a key of properties")
        for name in required
        if name not in properties
    )
    return found
