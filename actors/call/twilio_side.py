"""What the call asks of Twilio's REST API (I/O): the transfer to the on-call
technician, and the apology when the model is gone. Each returns an error to report, or
None; neither raises (a REST failure must never crash the call's ending)."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import httpx

from actors.twilio_rest import TwilioRestError
from engine.tls import client_context
from engine.twiml import transfer, turn_away

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from actors.call.setup import CallSetup

log = logging.getLogger("afterhours.call")

NO_TWILIO_ACCOUNT = "transfers need a Twilio account (TWILIO_ACCOUNT_SID)"
SORRY_MODEL_DOWN = (
    "We are sorry, our assistant is not available right now. Please call again later."
)


async def transfer_call(setup: CallSetup) -> str | None:
    """Hand the live call to the project's on-call number (Twilio then ends our media
    stream itself). The error, if it did not happen."""
    if setup.twilio_rest is None:
        return NO_TWILIO_ACCOUNT
    if not setup.project.on_call_number:
        return "this business has no on-call number"
    try:
        async with _client(setup) as client:
            twiml = transfer(setup.project.on_call_number)
            await setup.twilio_rest.update_call(client, setup.call_sid, twiml)
    except TwilioRestError as exc:
        log.error("call %s: transfer failed: %s", setup.call_sid, exc)
        return str(exc)
    return None


async def apologise(setup: CallSetup) -> None:
    """The model is gone: the caller hears so and reaches the on-call technician if the
    project has one (without a Twilio account the stream just ends)."""
    if setup.twilio_rest is None:
        return
    try:
        async with _client(setup) as client:
            twiml = turn_away(SORRY_MODEL_DOWN, setup.project.on_call_number)
            await setup.twilio_rest.update_call(client, setup.call_sid, twiml)
    except TwilioRestError as exc:
        log.error("call %s: could not tell the caller: %s", setup.call_sid, exc)


@asynccontextmanager
async def _client(setup: CallSetup) -> AsyncIterator[httpx.AsyncClient]:
    """The process's shared client (its pool keeps Twilio's connection warm: a transfer
    pays no new TLS handshake while the caller waits), else one for this request."""
    if setup.http is not None:
        yield setup.http
        return
    async with httpx.AsyncClient(verify=client_context()) as client:
        yield client
