"""Changing a live call through Twilio's REST API (docs/wire-formats.md 2.8): the transfer to the
on-call technician. ``POST {TWILIO_API_BASE_URL}/2010-04-01/Accounts/{sid}/Calls/{CallSid}.json``
with Basic auth and ``Twiml=<Response>...``; Twilio then ends the media stream itself."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
import trio

REST_TIMEOUT_S = 5.0


class TwilioRestError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class TwilioRest:
    base_url: str
    account_sid: str
    auth_token: str = field(repr=False)  # never in a repr (a log line, a test failure)

    async def update_call(self, client: httpx.AsyncClient, call_sid: str, twiml: str) -> None:
        url = f"{self.base_url}/2010-04-01/Accounts/{self.account_sid}/Calls/{call_sid}.json"
        with trio.move_on_after(REST_TIMEOUT_S) as deadline:
            try:
                response = await client.post(
                    url, data={"Twiml": twiml}, auth=(self.account_sid, self.auth_token)
                )
            except httpx.HTTPError as exc:
                raise TwilioRestError(f"Twilio could not be reached: {exc}") from exc
        if deadline.cancelled_caught:
            raise TwilioRestError(f"Twilio did not answer within {REST_TIMEOUT_S:g} s")
        if not 200 <= response.status_code < 300:
            raise TwilioRestError(f"Twilio refused the call update: HTTP {response.status_code}")
