"""How this engine reaches Twilio's REST API, and so whether it can transfer a live call.

* **configured**: TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN set: Twilio itself, at
  TWILIO_API_BASE_URL (https://api.twilio.com by default).
* **simulated**: no TWILIO_ACCOUNT_SID and the engine runs its built-in simulators (no
  OPENAI_API_KEY, as for the simulated model): the simulated Twilio that ``afterhours
  simulate`` serves (engine/simulator/twilio_rest.py) at TWILIO_API_BASE_URL (by default
  http://127.0.0.1:PORT+2), with a local account derived from TWILIO_AUTH_TOKEN: never a
  real credential, and only ever sent to a loopback address.
* **not_configured**: anything else: a live call cannot be transferred. With a real
  model and no Twilio account (real callers, real emergencies) ``problem`` says why, for
  the start-up ERROR and ``/health/detailed``; with the simulators but no usable address
  for the simulated Twilio (PORT=0, a non-local TWILIO_API_BASE_URL) ``note`` does. The
  webhook's turn-away TwiML still dials a project's on-call number: that needs no REST call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from actors.twilio_rest import TwilioRest
from engine.config import is_loopback_url
from engine.simulator.twilio_calls import simulated_account

if TYPE_CHECKING:
    from collections.abc import Iterable

    from engine.config import Settings
    from engine.projects import Project


@dataclass(frozen=True, slots=True)
class TwilioAccess:
    mode: Literal["configured", "simulated", "not_configured"]
    rest: TwilioRest | None
    # Why a live call cannot be transferred where real callers can be (a real model):
    # logged at ERROR and listed in /health/detailed for projects with an on-call number.
    problem: str | None = None
    # Why the simulated Twilio is not used, with the built-in simulators (logged once).
    note: str | None = None


def twilio_access(settings: Settings) -> TwilioAccess:
    sid, token, url = (
        settings.twilio_account_sid,
        settings.twilio_auth_token,
        settings.twilio_api_base_url,
    )
    if sid and token and url:
        return TwilioAccess("configured", TwilioRest(url, sid, token.reveal()))
    if sid:
        return TwilioAccess(
            "not_configured", None, "TWILIO_ACCOUNT_SID is set without TWILIO_AUTH_TOKEN"
        )
    if settings.openai_api_key is not None:
        return TwilioAccess(
            "not_configured",
            None,
            "OPENAI_API_KEY is set but TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are not",
        )
    if url is None:
        note = "PORT is 0: set TWILIO_API_BASE_URL to the simulated Twilio's address"
        return TwilioAccess("not_configured", None, note=note)
    if not is_loopback_url(url):
        # The simulated account is for a simulator on this machine, never for a real host.
        note = f"TWILIO_API_BASE_URL {url} is not a local address"
        return TwilioAccess("not_configured", None, note=note)
    if not token:
        note = "TWILIO_AUTH_TOKEN is not set (the simulated account derives from it)"
        return TwilioAccess("not_configured", None, note=note)
    account_sid, password = simulated_account(token.reveal())
    return TwilioAccess("simulated", TwilioRest(url, account_sid, password))


@dataclass(frozen=True, slots=True)
class ConfigWarning:
    """A setting that leaves something the projects ask for undone (``/health/detailed``)."""

    code: str
    message: str
    projects: tuple[str, ...]


def transfer_warning(access: TwilioAccess, projects: Iterable[Project]) -> ConfigWarning | None:
    """The projects with an on-call number no live call can be transferred to, or
    ``None`` when there are none (or transfers work)."""
    if access.problem is None:
        return None
    stranded = tuple(sorted(p.id for p in projects if p.on_call_number))
    if not stranded:
        return None
    message = (
        f"live calls cannot be transferred to the on-call number of {', '.join(stranded)}: "
        f"{access.problem} (a transfer the model asks for cannot happen)"
    )
    return ConfigWarning("transfers_unavailable", message, stranded)
