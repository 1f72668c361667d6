"""Does the session the server confirmed match what the call asked for? Pure.

``session.updated`` echoes the effective configuration (docs/wire-formats.md 1.4). If the audio
formats did not take effect the caller would hear 24 kHz PCM played as mu-law, which is
loud static, and the model would hear noise: such a session cannot serve the call, so
the call ends politely (the engine's apology, not the model's voice). A different voice
is only noted: the caller is still understood. ``expires_at`` is checked before the
renewal timer trusts it.
"""

from __future__ import annotations

from typing import Any, Final

AUDIO_FORMAT: Final = "audio/pcmu"
# A Realtime session lives at most an hour today; an expiry further off than this, or
# in the past, is not believed (the configured cap applies instead).
MAX_BELIEVED_EXPIRY_S: Final = 6 * 3600.0


def format_mismatches(session: dict[str, Any]) -> list[str]:
    """What in a confirmed session makes its audio unusable for a phone call."""
    problems = []
    for direction in ("input", "output"):
        found = _get(session, "audio", direction, "format", "type")
        if found != AUDIO_FORMAT:
            problems.append(f"{direction} audio is {found!r}, not {AUDIO_FORMAT!r}")
    return problems


def voice_mismatch(session: dict[str, Any], voice: str) -> str | None:
    found = _get(session, "audio", "output", "voice")
    if found is None or found == voice:
        return None
    return f"voice is {found!r}, not {voice!r}"


def believed_expiry_s(expires_at: Any, now_unix_s: float) -> float | None:
    """Seconds until ``expires_at`` (unix seconds), or None if it is not believable."""
    if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
        return None
    remaining_s = float(expires_at) - now_unix_s
    if not 0 < remaining_s <= MAX_BELIEVED_EXPIRY_S:
        return None
    return remaining_s


def _get(value: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value
