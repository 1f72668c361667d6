"""Vapi's inbound bypass, as the voice webhook speaks it: the request that creates the
call, and Vapi's answer, whose TwiML Twilio is given. Pure (no I/O).

Vapi's API reference (``POST /call``, ``CreateCallDTO``, the ``Call`` object): a call
created with ``phoneCallProviderBypassEnabled: true`` is not placed by Vapi; Vapi answers
201 with the Call object, whose ``phoneCallProviderDetails.twiml`` bridges the Twilio
call into Vapi (``<Connect><Stream url="wss://…/<call id>/transport"/>``). ``metadata``
is echoed in every server message about the call (``message.call.metadata``): we send
Twilio's CallSid and the project there, so Vapi's reports find the call's record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec

from engine.twiml import TwimlInvalid, parse_twiml

# A Call object is a few KB (the assistant's configuration is not in it unless inline).
ANSWER_MAX_BYTES = 256 * 1024
TWIML_MAX_CHARS = 16 * 1024  # what the webhook answers Twilio with (Twilio takes 64 KB)
# Vapi's ids are UUIDs; keys in our tables are at most 64 characters (writes.py KEY_MAX).
_VAPI_ID = re.compile(r"[A-Za-z0-9_.:-]{1,59}")


class VapiAnswerInvalid(ValueError):
    """Vapi's answer to the create request is not a call this engine can hand to Twilio."""


@dataclass(frozen=True, slots=True)
class CreatedCall:
    call_id: str  # Vapi's id for the call (calls.vapi_call_id)
    twiml: str  # for Twilio, as Vapi wrote it


def bypass_request(
    *,
    phone_number_id: str,
    assistant_id: str | None,
    caller: str,
    call_sid: str,
    project_id: str,
) -> dict[str, Any]:
    """The body of ``POST /call`` for an inbound call Twilio carries. Without
    ``assistant_id`` Vapi uses the assistant set on the number in its dashboard."""
    body: dict[str, Any] = {
        "phoneNumberId": phone_number_id,
        "phoneCallProviderBypassEnabled": True,
        "customer": {"number": caller},
        "metadata": {"callSid": call_sid, "project": project_id},
    }
    if assistant_id:
        body["assistantId"] = assistant_id
    return body


class _Details(msgspec.Struct):
    twiml: str | None = None


class _Answer(msgspec.Struct, rename="camel"):
    id: str
    phone_call_provider_details: _Details | None = None


def parse_created_call(body: bytes) -> CreatedCall:
    """Vapi's 201 answer; ``VapiAnswerInvalid`` (saying what is wrong, never quoting the
    body) unless it has a call id and TwiML Twilio can run."""
    if len(body) > ANSWER_MAX_BYTES:
        raise VapiAnswerInvalid(f"the answer is over {ANSWER_MAX_BYTES} bytes")
    try:
        answer = msgspec.json.decode(body, type=_Answer)
    except msgspec.DecodeError as exc:
        raise VapiAnswerInvalid(f"not a Vapi call: {exc}") from None
    if _VAPI_ID.fullmatch(answer.id) is None:
        raise VapiAnswerInvalid("the call id is not a Vapi id")
    details = answer.phone_call_provider_details
    twiml = details.twiml if details is not None else None
    if not twiml:
        raise VapiAnswerInvalid("no phoneCallProviderDetails.twiml (was the bypass enabled?)")
    check_twiml(twiml)
    return CreatedCall(answer.id, twiml)


def check_twiml(twiml: str) -> None:
    """``VapiAnswerInvalid`` unless ``twiml`` is what Twilio can run (engine/twiml.py)."""
    if len(twiml) > TWIML_MAX_CHARS:
        raise VapiAnswerInvalid(f"the TwiML is over {TWIML_MAX_CHARS} characters")
    try:
        parse_twiml(twiml)
    except TwimlInvalid as exc:
        raise VapiAnswerInvalid(f"the TwiML is unusable: {exc}") from None


def is_vapi_id(value: object) -> bool:
    return isinstance(value, str) and _VAPI_ID.fullmatch(value) is not None
