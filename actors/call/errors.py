"""Which Realtime errors end a call, and which the call lives through. Pure.

The GA reference says an ``error`` event leaves the session open unless it says
otherwise, and the live API sends many that are not the caller's problem: ``code: null``
for a truncate past the item's audio ("Audio content of N ms is already shorter than M
ms"), ``server_error``, ``conversation_already_has_active_response`` when server VAD
started a response a moment before ours. So the rule is the other way round from a
whitelist: a short list of errors after which nothing can help the caller (the key or the
account is refused) ends the call; the session's expiry replaces the session; known races
are noted quietly; everything else is logged, counted and alerted on when it recurs, and
the call goes on.

Client events carry an ``event_id`` (``ClientIds``) that the server echoes in
``error.event_id``: its prefix names the kind of event that caused the error.
"""

from __future__ import annotations

import enum
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Final


class ErrorClass(enum.Enum):
    FATAL = "fatal"  # the call ends: failed, model_error
    SESSION_GONE = "session_gone"  # a new session replaces this one
    RACE = "race"  # the protocol's normal races: logged at info, no alert
    RECOVERABLE = "recoverable"  # logged, counted, alerted on a rate; the call goes on


# Retrying or going on cannot help: the key, the account or the model is refused. From
# the GA error types and what users of other bridges report receiving from the live API
# (LiveKit Agents #6352: quota; revoked keys; deactivated accounts; an unknown model).
FATAL_CODES: Final = frozenset(
    {
        "invalid_api_key",
        "insufficient_quota",
        "account_deactivated",
        "billing_hard_limit_reached",
        "organization_deactivated",
        "model_not_found",
    }
)
FATAL_TYPES: Final = frozenset({"authentication_error", "permission_error", "insufficient_quota"})
SESSION_GONE_CODES: Final = frozenset({"session_expired"})
# Races the protocol makes normal, not faults: cancelling a response that just finished,
# truncating an item that is gone, a response.create that met one VAD started.
RACE_CODES: Final = frozenset(
    {
        "response_cancel_not_active",
        "conversation_already_has_active_response",
        "item_truncate_invalid_item_id",
        "invalid_audio_end_ms",
    }
)

# Kinds of client event, as the prefix of their event_id.
KINDS: Final = {
    "a": "input_audio_buffer.append",
    "r": "response.create",
    "t": "conversation.item.truncate",
    "o": "conversation.item.create",  # a function's output
    "i": "conversation.item.create",  # a text item: keypad digits, restored history
    "s": "session.update",
}


def is_active_response_refusal(code: str | None, message: str) -> bool:
    """Our ``response.create`` met one already running. The live API has sent this
    with ``code: null`` too (openai/openai-realtime-agents#3), so the message counts."""
    if code == "conversation_already_has_active_response":
        return True
    return code is None and message.startswith("Conversation already has an active response")


def classify(
    code: str | None, error_type: str, caused_by: str | None, message: str = ""
) -> ErrorClass:
    if (code or "") in FATAL_CODES or error_type in FATAL_TYPES:
        return ErrorClass.FATAL
    if code in SESSION_GONE_CODES:
        return ErrorClass.SESSION_GONE
    if code in RACE_CODES or is_active_response_refusal(code, message):
        return ErrorClass.RACE
    if caused_by == "conversation.item.truncate":
        # The live API refuses a truncate past what was generated with code: null; the
        # item is as short as it will ever be, so nothing is lost.
        return ErrorClass.RACE
    return ErrorClass.RECOVERABLE


class ClientIds:
    """``event_id`` for the client events of one call: ``{kind}{n}``, short (the
    appends are the hot path) and unique within the call."""

    def __init__(self) -> None:
        self._next = itertools.count(1)

    def new(self, kind: str) -> str:
        assert kind in KINDS
        return f"{kind}{next(self._next)}"

    def append(self) -> str:
        """``new("a")`` for the hot path (one per caller frame), without the check."""
        return "a" + str(next(self._next))

    @staticmethod
    def kind_of(event_id: str | None) -> str | None:
        """The type of client event an echoed ``event_id`` names (None: not ours)."""
        if not event_id or not event_id[1:].isdigit():
            return None
        return KINDS.get(event_id[0])


@dataclass
class ErrorRate:
    """Recoverable errors of one call: an alert when ``threshold`` of them fall within
    ``window_s``, then none until the window has emptied (one alert per episode, not
    one per error: a model in trouble sends many)."""

    window_s: float = 60.0
    threshold: int = 3
    total: int = 0
    _times_s: deque[float] = field(default_factory=deque)
    _alerted: bool = False

    def note(self, now_s: float) -> bool:
        """Count one error; True when this one should raise the alert."""
        self.total += 1
        times = self._times_s
        while times and times[0] <= now_s - self.window_s:
            times.popleft()
        if not times:
            self._alerted = False
        times.append(now_s)
        if len(times) >= self.threshold and not self._alerted:
            self._alerted = True
            return True
        return False
