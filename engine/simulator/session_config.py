"""The simulated model's session configuration: the server defaults a new session starts
with, and how a client's ``session.update`` changes them.

The real API's ``session.created`` carries its defaults (24 kHz PCM both ways, server
VAD, no transcription), so a client that does not configure the session gets PCM, not
the mu-law a phone line needs. ``session.updated`` echoes the whole effective config.
Pure functions; the session object has the shape of ``RealtimeSessionCreateResponse``.
"""

from __future__ import annotations

import copy
from typing import Any, Final

DEFAULT_INSTRUCTIONS: Final = (
    "Your knowledge cutoff is 2023-10. You are a helpful, witty, and friendly AI."
)
PCM_24K: Final = {"type": "audio/pcm", "rate": 24000}


def server_defaults(
    session_id: str, model: str, *, silence_ms: int, expires_at: int | None
) -> dict[str, Any]:
    """What a new session is before any ``session.update``."""
    session: dict[str, Any] = {
        "id": session_id,
        "object": "realtime.session",
        "type": "realtime",
        "model": model,
        "output_modalities": ["audio"],
        "instructions": DEFAULT_INSTRUCTIONS,
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "include": None,
        "audio": {
            "input": {
                "format": dict(PCM_24K),
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": silence_ms,
                    "idle_timeout_ms": None,
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {"format": dict(PCM_24K), "voice": "alloy", "speed": 1.0},
        },
    }
    if expires_at is not None:
        session["expires_at"] = expires_at
    return session


def without_paths(update: dict[str, Any], paths: set[str]) -> dict[str, Any]:
    """``update`` minus the dotted ``paths`` (``"audio.output.format"``): the fields a
    simulator told to ignore them leaves as they were."""
    trimmed = copy.deepcopy(update)
    for path in paths:
        *parents, leaf = path.split(".")
        node: Any = trimmed
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return trimmed


def merged(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """The session after ``update``: fields left out are kept, objects are merged key by
    key, lists and ``null`` replace. A tagged object whose ``type`` changes (PCM to
    mu-law, server VAD to semantic VAD) is replaced whole: merging would keep the old
    kind's keys (``rate`` on a mu-law format)."""
    result = copy.deepcopy(current)
    for key, value in update.items():
        old = result.get(key)
        if isinstance(value, dict) and isinstance(old, dict) and _same_kind(old, value):
            result[key] = merged(old, value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _same_kind(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return "type" not in new or old.get("type") == new.get("type")


def voice_change(current: dict[str, Any], update: dict[str, Any]) -> str | None:
    """The new voice ``update`` asks for, when it differs from the current one."""
    voice = ((update.get("audio") or {}).get("output") or {}).get("voice")
    if voice is None or voice == current["audio"]["output"].get("voice"):
        return None
    return str(voice)


def audio_input(session: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = session["audio"]["input"]
    return value


def audio_output(session: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = session["audio"]["output"]
    return value
