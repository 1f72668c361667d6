"""Vapi's server messages (``POST /vapi/events``) as the engine's records. Pure.

Every message is ``{"message": {"type": ..., "call": {Call}, ...}}`` (Vapi's "Server
events" page and its ``ServerMessage*`` schemas). Two types say something the call's
record needs:

* ``end-of-call-report``, sent once when the call ends and Vapi's post-processing is
  done: ``endedReason``, ``cost``, ``costBreakdown`` (transport, stt, llm, tts, vapi,
  total, token counts), ``startedAt``/``endedAt`` (and ``durationSeconds`` in newer
  versions), the conversation in ``artifact.messages`` (older versions: top-level
  ``messages``) and as text in ``artifact.transcript`` / ``transcript``, and the summary
  in ``analysis.summary`` / ``summary``;
* ``status-update``, whenever ``call.status`` changes (``in-progress``, ``forwarding``,
  ``ended`` with its ``endedReason``).

Both become a ``CallUpdated`` with ``source="vapi"``: the store's merge (actors/store/
writes.py) ranks them like the engine's own word, so a report delivered twice, or a
report before or after the ``ended`` status or Twilio's status callback, gives one row
with the same values.

Which call: the ``metadata.callSid`` we sent when creating it (api/http/vapi_calls.py), else
``call.phoneCallProviderId`` (Twilio's CallSid, as Vapi knows it), else the key
``vapi:<Vapi's call id>``, which the store first resolves to the row carrying that
``vapi_call_id`` (writes.py) and otherwise keeps as the row of a call we never saw.

What a report holds is bounded here (turns, their text), and the store bounds the rest,
so a report of megabytes is cut, never refused for its size (the API refuses a body over
``api/http/vapi_events.py MAX_BODY_BYTES`` before reading it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime  # noqa: TC003 -- msgspec reads the annotations at run time
from typing import Any, Final, Literal

import msgspec

from engine.messages import CallUpdated
from engine.vapi_codec import is_vapi_id

MAX_TURNS: Final = 1000
TURN_TEXT_MAX_CHARS: Final = 4000
VAPI_KEY_PREFIX: Final = "vapi:"  # a call known only by Vapi's id (writes.py resolves it)
_CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")
_PROJECT_ID = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")

# Types that carry nothing the record needs (the report brings the whole conversation):
# acknowledged with 204 and dropped, so an operator who enabled them in Vapi's
# serverMessages sees no errors in Vapi's call logs.
INFORMATIONAL: Final = frozenset({
    "conversation-update", "hang", "language-changed", "language-change-detected",
    "model-output", "phone-call-control", "speech-update", "transcript",
    'transcript[transcriptType="final"]', "transfer-update", "user-interrupted",
    "voice-input", "chat.created", "chat.deleted", "session.created", "session.updated",
    "session.deleted", "call.deleted", "call.delete.failed",
})  # fmt: skip
# Types Vapi sends expecting an answer this engine does not give (the assistant, its
# tools and transfers are configured in Vapi): a 422 names the type, so the operator
# finds in Vapi's call log why the request failed, rather than a made-up answer.
REQUESTS: Final = frozenset({
    "assistant-request", "tool-calls", "function-call", "transfer-destination-request",
    "handoff-destination-request", "knowledge-base-request", "voice-request",
    "call.endpointing.request",
})  # fmt: skip
RECORDED: Final = frozenset({"end-of-call-report", "status-update"})

# Vapi's endedReason (its Call.endedReason enum) as our statuses. Answered calls that
# ended the way calls end (either side hung up, the assistant transferred it, a duration
# or silence limit, an operator) are completed, as the engine's own such calls are; a
# caller who never reached the assistant is missed; everything else (pipeline-error-*,
# call.start.error-*, vapi-error-*, assistant-error, twilio-failed-to-connect-call,
# unknown-error, and reasons Vapi adds later) failed: a new reason shows up in the
# failure rate, where an operator looks, rather than hiding among completed calls.
_COMPLETED_PREFIXES: Final = (
    "customer-ended-call", "assistant-ended-call", "assistant-said-end-call-phrase",
    "assistant-forwarded-call", "exceeded-max-duration", "silence-timed-out",
    "manually-canceled", "voicemail",
)  # fmt: skip
_MISSED: Final = frozenset({
    "customer-busy", "customer-did-not-answer", "vonage-rejected",
    # Vapi created the call but Twilio never opened the stream: the caller hung up
    # while the TwiML was on its way, or Twilio could not run it.
    "phone-call-provider-bypass-enabled-but-no-call-received",
})  # fmt: skip
_ROLES: Final[dict[str, Literal["caller", "assistant"]]] = {
    "user": "caller",
    "bot": "assistant",
    "assistant": "assistant",
}
# The text transcript's line prefixes (Vapi writes "AI: ..." and "User: ...").
_TEXT_ROLES: Final[dict[str, Literal["caller", "assistant"]]] = {
    "user": "caller",
    "customer": "caller",
    "ai": "assistant",
    "assistant": "assistant",
    "bot": "assistant",
}
_COST_KEYS: Final = (
    "transport", "stt", "llm", "tts", "vapi", "chat", "total", "llmPromptTokens",
    "llmCompletionTokens", "ttsCharacters",
)  # fmt: skip


class MessageRefused(ValueError):
    """A message the engine does not take: the HTTP status and a message naming what."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


class _PhoneNumber(msgspec.Struct):
    id: str | None = None
    number: str | None = None


class _Customer(msgspec.Struct):
    number: str | None = None


class _Call(msgspec.Struct, rename="camel"):
    id: str | None = None
    phone_call_provider_id: str | None = None
    phone_number_id: str | None = None
    phone_number: _PhoneNumber | None = None
    customer: _Customer | None = None
    metadata: dict[str, Any] | None = None
    cost: float | None = None
    cost_breakdown: dict[str, Any] | None = None


class _Artifact(msgspec.Struct):
    # Items are several shapes (user, bot, system, tool calls and results): read as
    # mappings, so one shape Vapi adds never costs the record.
    messages: list[dict[str, Any]] | None = None
    transcript: str | None = None


class _Analysis(msgspec.Struct):
    summary: str | None = None


class _Message(msgspec.Struct, rename="camel"):
    type: str
    call: _Call | None = None
    phone_number: _PhoneNumber | None = None
    customer: _Customer | None = None
    status: str | None = None
    ended_reason: str | None = None
    cost: float | None = None
    cost_breakdown: dict[str, Any] | None = None
    artifact: _Artifact | None = None
    analysis: _Analysis | None = None
    messages: list[dict[str, Any]] | None = None
    transcript: str | None = None
    summary: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_seconds: float | None = None


class _Envelope(msgspec.Struct):
    message: _Message


@dataclass(frozen=True, slots=True)
class CallHints:
    """What a message says of its call's project, for the API to check against the
    routing snapshot (a report for a call we never saw is stored with its number's)."""

    project_id: str | None  # from the metadata we sent
    phone_number_id: str | None  # Vapi's id for the number
    to_number: str | None


@dataclass(frozen=True, slots=True)
class Decoded:
    type: str
    update: CallUpdated | None  # None: acknowledged, nothing to record
    hints: CallHints | None = None


def decode(body: bytes) -> Decoded:
    """One server message; ``MessageRefused`` for bad JSON (400), a message without
    what its type needs (422), or a type this engine does not take (422)."""
    try:
        envelope = msgspec.json.decode(body, type=_Envelope)
    except msgspec.ValidationError as exc:
        raise MessageRefused(400, f"not a Vapi server message: {exc}", _field(exc)) from None
    except msgspec.DecodeError as exc:
        raise MessageRefused(400, f"the body is not JSON: {exc}") from None
    message = envelope.message
    kind = message.type
    if kind in INFORMATIONAL:
        return Decoded(kind, None)
    if kind in REQUESTS:
        raise MessageRefused(
            422,
            f"this engine does not answer Vapi's {kind!r}: configure the assistant, its "
            "tools and transfers in Vapi",
            "message.type",
        )
    if kind not in RECORDED:
        raise MessageRefused(
            422,
            f"unknown Vapi server message type {kind[:64]!r}; this engine records "
            f"{' and '.join(sorted(RECORDED))} and acknowledges the informational ones",
            "message.type",
        )
    call = message.call
    if call is None or not is_vapi_id(call.id):
        raise MessageRefused(422, f"a {kind} needs message.call.id, Vapi's id", "message.call.id")
    hints = _hints(message, call)
    if kind == "status-update":
        return Decoded(kind, _status_update(message, call), hints)
    return Decoded(kind, _report(message, call), hints)


def _field(exc: msgspec.ValidationError) -> str | None:
    # msgspec ends its message with "- at `$.message.cost`": the field, for the client.
    found = re.search(r"at `\$\.([^`]+)`", str(exc))
    return found[1] if found else None


def call_key(call: _Call) -> str:
    """The ``calls.call_sid`` a message about ``call`` updates (see the module doc)."""
    metadata = call.metadata or {}
    for candidate in (metadata.get("callSid"), call.phone_call_provider_id):
        if isinstance(candidate, str) and _CALL_SID.fullmatch(candidate):
            return candidate
    return VAPI_KEY_PREFIX + str(call.id)


def _hints(message: _Message, call: _Call) -> CallHints:
    project = (call.metadata or {}).get("project")
    number = message.phone_number or call.phone_number
    return CallHints(
        project if isinstance(project, str) and _PROJECT_ID.fullmatch(project) else None,
        call.phone_number_id or (number.id if number else None),
        number.number if number else None,
    )


def ended_status(reason: str | None) -> Literal["completed", "missed", "failed"]:
    if reason is None:
        return "failed"  # Vapi always says why; a report that does not is not a success
    if reason in _MISSED:
        return "missed"
    if reason.startswith(_COMPLETED_PREFIXES):
        return "completed"
    return "failed"


def _status_update(message: _Message, call: _Call) -> CallUpdated | None:
    if message.status == "ended":
        # Final, ranked like the report that follows it: the report (same rank) fills
        # in what this does not know (cost, transcript, duration) and never loses them.
        status = ended_status(message.ended_reason)
        return CallUpdated(
            call_key(call),
            source="vapi",
            status=status,
            end_reason=message.ended_reason,
            error=message.ended_reason if status == "failed" else None,
            system="vapi",
            vapi_call_id=call.id,
        )
    if message.status in ("in-progress", "forwarding"):
        return CallUpdated(
            call_key(call), source="vapi", status="active", system="vapi", vapi_call_id=call.id
        )
    return None  # scheduled, queued, ringing: nothing the record shows


def _report(message: _Message, call: _Call) -> CallUpdated:
    status = ended_status(message.ended_reason)
    artifact = message.artifact or _Artifact()
    summary = (message.analysis.summary if message.analysis else None) or message.summary
    breakdown = message.cost_breakdown or call.cost_breakdown
    cost = message.cost if message.cost is not None else call.cost
    customer = message.customer or call.customer
    return CallUpdated(
        call_key(call),
        source="vapi",
        from_number=customer.number if customer else None,
        status=status,
        end_reason=message.ended_reason,
        error=message.ended_reason if status == "failed" else None,
        started_at=message.started_at,
        answered_at=message.started_at,
        ended_at=message.ended_at,
        duration_s=_duration_s(message),
        transcript=transcript_turns(
            artifact.messages or message.messages, artifact.transcript or message.transcript
        ),
        usage={"system": "vapi", "cost_breakdown": _costs(breakdown)} if breakdown else None,
        cost_usd=round(cost, 6) if cost is not None and cost >= 0 else None,
        system="vapi",
        vapi_call_id=call.id,
        summary=summary or None,
    )


def _duration_s(message: _Message) -> float | None:
    if message.duration_seconds is not None and message.duration_seconds >= 0:
        return round(message.duration_seconds, 3)
    if message.started_at is not None and message.ended_at is not None:
        return max(0.0, round((message.ended_at - message.started_at).total_seconds(), 3))
    return None


def _costs(breakdown: dict[str, Any]) -> dict[str, float]:
    """The breakdown's numbers (USD, and the token and character counts), nothing else:
    the analysis sub-breakdown and whatever Vapi adds stay out of the bounded usage."""
    return {
        key: float(value)
        for key in _COST_KEYS
        if isinstance(value := breakdown.get(key), int | float) and not isinstance(value, bool)
    }


def transcript_turns(
    messages: list[dict[str, Any]] | None, text: str | None
) -> list[dict[str, Any]] | None:
    """The conversation in the engine's transcript shape (actors/call/transcript.py:
    ``role`` caller or assistant, ``text``, ``offset_ms`` from the start of the call),
    from Vapi's messages (system prompts, tool calls and results left out), else from
    its text transcript (offsets unknown: 0); at most ``MAX_TURNS`` turns."""
    turns: list[dict[str, Any]] = []
    for item in messages or ():
        role = _ROLES.get(str(item.get("role")))
        words = item.get("message")
        if role is None or not isinstance(words, str) or not words.strip():
            continue
        seconds = item.get("secondsFromStart")
        offset_ms = round(seconds * 1000) if isinstance(seconds, int | float) else 0
        turns.append({"role": role, "text": _cut(words.strip()), "offset_ms": max(0, offset_ms)})
        if len(turns) == MAX_TURNS:
            break
    if turns or not text:
        return turns or None
    return _text_turns(text) or None


def _text_turns(text: str) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = []
    for line in text.splitlines():
        speaker, colon, words = line.partition(":")
        role = _TEXT_ROLES.get(speaker.strip().lower()) if colon else None
        if role is not None and words.strip():
            if len(turns) == MAX_TURNS:
                break
            turns.append({"role": role, "text": _cut(words.strip()), "offset_ms": 0})
        elif turns and line.strip():  # a turn's text that ran onto the next line
            turns[-1]["text"] = _cut(f"{turns[-1]['text']} {line.strip()}")
    return turns


def _cut(text: str) -> str:
    return text if len(text) <= TURN_TEXT_MAX_CHARS else text[: TURN_TEXT_MAX_CHARS - 6] + " [...]"
