"""How this engine reaches Vapi, and the request the voice webhook makes there for a
number on the ``vapi`` system: ``POST {VAPI_API_BASE_URL}/call`` with the inbound bypass
(engine/vapi_codec.py), within ``VAPI_CREATE_TIMEOUT_S``. Its TwiML goes to Twilio; any
failure is a ``VapiUnavailable`` whose ``reason`` (a fixed vocabulary, for the call's
``vapi_fallback``, the refusal counts and the alert) sends the caller to the project's
fallback (api/http/twilio_webhooks.py).

Access, like Twilio's (api/http/twilio_access.py):

* **configured**: ``VAPI_API_KEY`` set: Vapi at ``VAPI_API_BASE_URL`` (https://api.vapi.ai
  by default); its server messages are checked against ``VAPI_SERVER_SECRET``.
* **simulated**: no ``VAPI_API_KEY`` and the engine runs its built-in simulators (no
  ``OPENAI_API_KEY``), with a loopback ``VAPI_API_BASE_URL`` (http://127.0.0.1:PORT+3 by
  default): the simulated Vapi ``afterhours call|simulate`` serves
  (engine/simulator/vapi.py), with a key and server secret derived from
  TWILIO_AUTH_TOKEN, never a real credential, only ever sent to a loopback address.
* **not_configured**: anything else: a ``vapi`` number's callers get the fallback.

The key is sent only in the ``Authorization`` header and never logged or shown: errors
name the HTTP status and at most Vapi's own ``message``, cut short.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import httpx
import msgspec
import trio

from engine.config import Secret, is_loopback_url
from engine.simulator.vapi import simulated_vapi_credentials
from engine.tls import client_context
from engine.vapi_codec import VapiAnswerInvalid, bypass_request, parse_created_call

if TYPE_CHECKING:
    from engine.config import Settings
    from engine.routing import NumberRoute
    from engine.vapi_codec import CreatedCall

# Why Vapi did not take a call: calls.vapi_fallback, refusal reasons, alert metadata.
FallbackReason = Literal[
    "vapi_not_configured", "vapi_timeout", "vapi_unreachable", "vapi_refused", "vapi_bad_answer"
]
_SHOWN_MAX_CHARS = 200


class VapiUnavailable(Exception):
    def __init__(self, reason: FallbackReason, detail: str) -> None:
        super().__init__(detail)
        self.reason: FallbackReason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class VapiAccess:
    mode: Literal["configured", "simulated", "not_configured"]
    base_url: str | None = None
    api_key: Secret | None = None
    server_secret: Secret | None = None  # what x-vapi-secret must carry; None: nothing passes
    note: str | None = None  # why not configured, logged once at start


def vapi_access(settings: Settings) -> VapiAccess:
    url, key, secret = (
        settings.vapi_api_base_url,
        settings.vapi_api_key,
        settings.vapi_server_secret,
    )
    if key and url:
        return VapiAccess("configured", url, key, secret)
    if settings.openai_api_key is not None:
        return VapiAccess("not_configured", server_secret=secret, note="VAPI_API_KEY is not set")
    if url is None:
        note = "PORT is 0: set VAPI_API_BASE_URL to the simulated Vapi's address"
        return VapiAccess("not_configured", server_secret=secret, note=note)
    if not is_loopback_url(url):
        # The simulated key is for a simulator on this machine, never for a real host.
        note = f"VAPI_API_BASE_URL {url} is not a local address and VAPI_API_KEY is not set"
        return VapiAccess("not_configured", server_secret=secret, note=note)
    token = settings.twilio_auth_token
    if not token:
        note = "TWILIO_AUTH_TOKEN is not set (the simulated Vapi's key derives from it)"
        return VapiAccess("not_configured", server_secret=secret, note=note)
    derived_key, derived_secret = simulated_vapi_credentials(token.reveal())
    return VapiAccess("simulated", url, Secret(derived_key), secret or Secret(derived_secret))


class VapiCalls:
    """Creates the Vapi side of a call for the voice webhook."""

    def __init__(self, access: VapiAccess, *, timeout_s: float) -> None:
        self._access = access
        self._timeout_s = timeout_s

    async def create(self, route: NumberRoute, caller: str, call_sid: str) -> CreatedCall:
        """Vapi's call and its TwiML, or ``VapiUnavailable`` within the budget (the whole
        exchange, connecting included: Twilio's caller is waiting on this)."""
        access = self._access
        if access.base_url is None or access.api_key is None:
            raise VapiUnavailable("vapi_not_configured", access.note or "Vapi is not configured")
        if route.vapi_phone_number_id is None:  # the admin API refuses such a number
            raise VapiUnavailable("vapi_not_configured", "the number has no vapi_phone_number_id")
        body = bypass_request(
            phone_number_id=route.vapi_phone_number_id,
            assistant_id=route.vapi_assistant_id,
            caller=caller,
            call_sid=call_sid,
            project_id=route.project_id,
        )
        headers = {"Authorization": f"Bearer {access.api_key.reveal()}"}
        response: httpx.Response | None = None
        # httpx's timeout bounds each step; this, the whole exchange.
        with trio.move_on_after(self._timeout_s):
            try:
                async with httpx.AsyncClient(
                    verify=client_context(), timeout=self._timeout_s
                ) as http:
                    response = await http.post(
                        f"{access.base_url}/call", json=body, headers=headers
                    )
            except httpx.HTTPError as exc:
                raise VapiUnavailable(
                    "vapi_unreachable", f"Vapi could not be reached: {type(exc).__name__}"
                ) from None
        if response is None:
            raise VapiUnavailable(
                "vapi_timeout", f"Vapi did not answer within {self._timeout_s:g} s"
            )
        if response.status_code not in (200, 201):
            raise VapiUnavailable(
                "vapi_refused",
                f"Vapi refused the call: HTTP {response.status_code}{_said(response)}",
            )
        try:
            return parse_created_call(response.content)
        except VapiAnswerInvalid as exc:
            raise VapiUnavailable("vapi_bad_answer", f"Vapi's answer is unusable: {exc}") from None


def _said(response: httpx.Response) -> str:
    """Vapi's own ``message`` (its error shape), cut short; nothing else of the body."""
    try:
        message = msgspec.json.decode(response.content).get("message")
    except (msgspec.DecodeError, AttributeError):
        return ""
    if isinstance(message, list):
        message = "; ".join(str(part) for part in message)
    return f" ({str(message)[:_SHOWN_MAX_CHARS]})" if message else ""
