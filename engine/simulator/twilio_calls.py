"""The calls the simulated Twilio carries, and what its REST API may do to them.

Twilio is one party with two faces: it opens the media stream for a call and it serves
the REST API that changes that call. In the simulation both faces live on the caller's
side: the simulated caller (engine/simulator/caller.py) registers each call it places
here, and the simulated REST API (engine/simulator/twilio_rest.py) finds it here. An
update with new TwiML replaces what the call was running, its ``<Connect><Stream>``
included: Twilio then sends ``stop`` on the stream and closes the WebSocket (docs/wire-formats.md
2.8), which the caller does when ``LiveCall.replaced`` is set.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import trio

from engine.twiml import TwimlInvalid, parse_twiml

CallStatus = Literal["in-progress", "completed"]


def simulated_account(auth_token: str) -> tuple[str, str]:
    """(AccountSid, REST password) of the local simulated Twilio account.

    Derived from TWILIO_AUTH_TOKEN (generated into DATA_DIR for local use), so the
    engine and ``afterhours simulate`` agree on them without another file; one-way
    (HMAC), so a real token set by mistake is never what goes over the wire.
    """
    key = auth_token.encode()
    account = hmac.new(key, b"afterhours simulated Twilio account", hashlib.sha256)
    password = hmac.new(key, b"afterhours simulated Twilio REST password", hashlib.sha256)
    return "AC" + account.hexdigest()[:32], password.hexdigest()


TwimlError = TwimlInvalid  # TwiML Twilio could not run: its error 12100


@dataclass(frozen=True, slots=True)
class CallUpdate:
    """One accepted ``POST .../Calls/{CallSid}.json``."""

    call_sid: str
    twiml: str | None  # None: a Status=completed hang-up
    at_s: float  # trio.current_time() when it was accepted
    at: datetime  # the same moment on the wall clock
    dialled: tuple[str, ...]  # the numbers of its <Dial>s, in order

    @property
    def transferred_to(self) -> str | None:
        return self.dialled[0] if self.dialled else None


@dataclass
class LiveCall:
    call_sid: str
    from_number: str
    to_number: str
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    status: CallStatus = "in-progress"
    # Set when an update took the call away from its media stream.
    replaced: trio.Event = field(default_factory=trio.Event)
    update: CallUpdate | None = None


def dialled_numbers(twiml: str) -> tuple[str, ...]:
    """The numbers ``twiml`` dials; raises ``TwimlError`` unless it is well-formed XML
    with a ``<Response>`` root (what Twilio's 12100 page lists as parse failures)."""
    root = parse_twiml(twiml)
    numbers: list[str] = []
    for dial in root.iter("Dial"):
        # <Dial>+1555...</Dial> or <Dial><Number>+1555...</Number></Dial>
        if dial.text and dial.text.strip():
            numbers.append(dial.text.strip())
        numbers += [n.text.strip() for n in dial.iter("Number") if n.text and n.text.strip()]
    return tuple(numbers)


class CallRegistry:
    """The calls the simulated Twilio carries, by CallSid, and the updates it accepted."""

    def __init__(self) -> None:
        self._calls: dict[str, LiveCall] = {}
        self.updates: list[CallUpdate] = []

    def add(self, call_sid: str, from_number: str, to_number: str) -> LiveCall:
        call = LiveCall(call_sid, from_number, to_number)
        self._calls[call_sid] = call
        return call

    def get(self, call_sid: str) -> LiveCall | None:
        return self._calls.get(call_sid)

    def hang_up(self, call_sid: str) -> None:
        """The caller hung up (or the far end of a transfer did): the call is over."""
        call = self._calls.get(call_sid)
        if call is not None:
            call.status = "completed"

    def apply(self, call: LiveCall, twiml: str | None) -> CallUpdate:
        """Run an accepted update: new TwiML (``None``: Status=completed) replaces the
        stream. Raises ``TwimlError`` for TwiML Twilio could not parse."""
        dialled = () if twiml is None else dialled_numbers(twiml)
        update = CallUpdate(call.call_sid, twiml, trio.current_time(), datetime.now(UTC), dialled)
        self.updates.append(update)
        if twiml is None:
            call.status = "completed"
        if call.update is None:  # the first one ended the stream; later ones change nothing
            call.update = update
            call.replaced.set()
        return update
