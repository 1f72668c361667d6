"""The engine's own tools, and what the call does when the model calls one. Pure.

The model calls ``classify_call`` once it knows how urgent the call is,
``transfer_to_on_call`` for an emergency the project can forward, and ``end_call`` after
its goodbye. Each returns the output the model reads (a JSON string) and, separately,
what the call must do; the actor does it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec

Intent = Literal["emergency", "routine", "unknown"]
_json: Final = msgspec.json.Encoder()

BUILTIN_TOOLS: Final[list[dict[str, Any]]] = [
    {
        "type": "function",
        "name": "classify_call",
        "description": "Record how urgent the call is, once you know.",
        "parameters": {
            "type": "object",
            "properties": {
                "intent": {"type": "string", "enum": ["emergency", "routine", "unknown"]},
                "summary": {"type": "string"},
            },
            "required": ["intent", "summary"],
        },
    },
    {
        "type": "function",
        "name": "transfer_to_on_call",
        "description": "Transfer the caller to the on-call technician (emergencies only).",
        "parameters": {
            "type": "object",
            "properties": {"reason": {"type": "string"}},
            "required": ["reason"],
        },
    },
    {
        "type": "function",
        "name": "end_call",
        "description": "Hang up after your goodbye has played.",
        "parameters": {
            "type": "object",
            "properties": {"reason": {"type": "string"}},
            "required": ["reason"],
        },
    },
]
BUILTIN_NAMES: Final = frozenset(tool["name"] for tool in BUILTIN_TOOLS)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call of a completed response, its name resolved."""

    call_id: str
    name: str
    arguments: str  # a JSON string, as the model wrote it
    item_id: str = ""
    epoch: int = 0  # which model session asked for it (a replaced one never sees its output)


@dataclass(frozen=True, slots=True)
class BuiltinResult:
    output: str  # what the model reads
    intent: Intent | None = None  # classify_call: the call's intent from now on
    hang_up: Literal["end_call", "transferred"] | None = None  # after the last words


def run_builtin(call: ToolCall, *, on_call_number: str | None, can_transfer: bool) -> BuiltinResult:
    try:
        arguments = msgspec.json.decode(call.arguments)
    except msgspec.DecodeError:
        return BuiltinResult(_encode({"error": "arguments were not valid JSON"}))
    if call.name == "classify_call" and isinstance(arguments, dict):
        raw = arguments.get("intent")
        intent: Intent = raw if raw in ("emergency", "routine") else "unknown"
        return BuiltinResult(_encode({"ok": True, "intent": intent}), intent=intent)
    if call.name == "end_call":
        note = "the call ends after your goodbye"
        return BuiltinResult(_encode({"ok": True, "note": note}), hang_up="end_call")
    if call.name == "transfer_to_on_call":
        if not on_call_number:
            return BuiltinResult(_encode({"error": "this business has no on-call number"}))
        if not can_transfer:
            # Said to the model, so it tells the caller instead of promising a transfer;
            # the actor also logs and alerts (an operator must learn of it).
            note = "transfers are not possible now: tell the caller a technician will call back"
            return BuiltinResult(_encode({"error": note}))
        note = "the caller is connected after your words"
        return BuiltinResult(_encode({"ok": True, "note": note}), hang_up="transferred")
    return BuiltinResult(_encode({"error": f"unknown tool {call.name}"}))


def _encode(value: dict[str, Any]) -> str:
    return _json.encode(value).decode()
