"""What a Twilio webhook's form may be, checked before any other work: pure, no I/O.

Anyone can POST to ``/twilio/voice`` and ``/twilio/status``, so the engine looks at a
form in an order where every step's cost is bounded by the step before it, and a
refusal costs O(body):

1. **Bounds.** ``MAX_BODY_BYTES`` (16 KiB; the API refuses a larger body from its
   ``Content-Length`` before reading it, and while reading one sent without) and
   ``MAX_FIELDS`` (100, counted as ``&`` separators before parsing). Twilio's real
   webhooks are about 1-3 kB with 20-40 fields (the core fields, the ``From*``/``To*``/
   ``Caller*``/``Called*`` geography, ``CallToken``, ``StirVerstat``...: Twilio's request
   parameters, https://www.twilio.com/docs/api/twiml/twilio_request), so these leave
   room for the fields Twilio adds without notice while keeping a stranger's form small.
2. **Formats** of the identifiers the engine uses (``check_identifiers``): ``CallSid``
   and ``AccountSid`` as Twilio writes them, ``To`` in E.164, ``From`` in E.164 or one
   of the forms Twilio uses for other callers, ``CallDuration`` as a few ASCII digits.
   They come before the signature because they are cheaper and because the signature
   failure is reported (a log line, an alert, an ``event_log`` row) with the
   ``CallSid``: once formats have passed, whatever the reports carry is a well-formed
   identifier, never a stranger's text. Twilio's requests for a call to a business's
   number pass them (a call to a Voice SDK client, whose ``To`` is not a number, would
   not, and the engine could not route it anyway).
3. **Signature** (engine/twilio_signature.py), over every field as received.

Each refusal names a ``reason`` (a metric label: a constant, never the input) and, for a
format, the field, never the value.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import parse_qsl

MAX_BODY_BYTES = 16 * 1024
MAX_FIELDS = 100
MAX_DURATION_DIGITS = 6  # 999,999 s (11 days); Twilio ends a call at 24 hours (86,400 s)
# A Voice SDK client's identity is at most 256 characters
# (https://www.twilio.com/docs/api/twiml/client); a SIP URI is given the same room.
MAX_ADDRESS_CHARS = 256

Reason = Literal["body_too_large", "too_many_fields", "bad_format"]

_CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")
_ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
# A Voice SDK client or a SIP caller: the prefix, then visible ASCII (no space, no
# control; Twilio's client identities may not hold either).
_CLIENT_OR_SIP = re.compile(rf"(client|sip):[\x21-\x7e]{{1,{MAX_ADDRESS_CHARS}}}")
# A withheld caller ID, as the carrier names it: "anonymous", "RESTRICTED"... (Twilio's
# changelog of 2022-11-16, "Upcoming changes to withheld caller ID behavior": alpha
# strings in From).
_WITHHELD = re.compile(r"[A-Za-z]{1,32}")
_DIGITS = re.compile(rf"[0-9]{{1,{MAX_DURATION_DIGITS}}}")

# Field -> (the pattern, what the 400 says it must be). CallSid is required on both
# webhooks (records are keyed by it), To on the voice webhook (calls are routed by it).
_FORMATS: dict[str, tuple[tuple[re.Pattern[str], ...], str]] = {
    "CallSid": ((_CALL_SID,), "CA and 32 hexadecimal digits"),
    "AccountSid": ((_ACCOUNT_SID,), "AC and 32 hexadecimal digits"),
    "To": ((_E164,), "an E.164 number (+ and up to 15 digits)"),
    "From": (
        (_E164, _CLIENT_OR_SIP, _WITHHELD),
        "an E.164 number, client:<name>, sip:<uri> or a withheld caller ID",
    ),
    "CallDuration": ((_DIGITS,), f"whole seconds, at most {MAX_DURATION_DIGITS} digits"),
}
_REQUIRED = {"voice": ("CallSid", "To"), "status": ("CallSid",)}
# A blank value says "not known" and carries nothing: allowed where Twilio may send one.
_MAY_BE_BLANK = {"From", "CallDuration"}


class FormRefused(Exception):
    """A form the engine does not look at further: the HTTP status, the reason (a
    metric label) and a message that may name a field but never quotes a value."""

    def __init__(self, status: int, reason: Reason, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.reason: Reason = reason
        self.message = message
        self.field = field


def parse_form(body: bytes) -> list[tuple[str, str]]:
    """The form's (name, value) pairs in order, blank values kept; ``FormRefused``
    past the bounds, decided before parsing."""
    if len(body) > MAX_BODY_BYTES:
        raise FormRefused(413, "body_too_large", f"the body is over {MAX_BODY_BYTES} bytes")
    if body.count(b"&") >= MAX_FIELDS:
        raise FormRefused(400, "too_many_fields", f"the form has over {MAX_FIELDS} fields")
    # Twilio sends UTF-8; a stray byte becomes U+FFFD here, and the signature (computed
    # over the same text) then fails rather than the parser.
    return parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)


def check_identifiers(pairs: list[tuple[str, str]], webhook: Literal["voice", "status"]) -> None:
    """``FormRefused`` (400, naming the field) unless every identifier present is
    well-formed and given once, and the webhook's required ones are there."""
    seen: set[str] = set()
    for name, value in pairs:
        formats = _FORMATS.get(name)
        if formats is None:
            continue
        if name in seen:
            raise _bad(name, "given more than once")
        seen.add(name)
        patterns, expected = formats
        if not value and name in _MAY_BE_BLANK:
            continue
        if not any(pattern.fullmatch(value) for pattern in patterns):
            raise _bad(name, f"expected {expected}")
    for name in _REQUIRED[webhook]:
        if name not in seen:
            raise _bad(name, "missing")


def call_duration_s(text: str | None) -> int | None:
    """``CallDuration`` in seconds, or None when it is absent or not whole ASCII digits
    (``str.isdigit`` would take "²", which ``int`` then refuses)."""
    if text is None or _DIGITS.fullmatch(text) is None:
        return None
    return int(text)


def _bad(field: str, problem: str) -> FormRefused:
    return FormRefused(400, "bad_format", f"{field}: {problem}", field)
