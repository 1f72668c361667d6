"""The parsers of single setting values: pure, one environment variable's text each.

A parser takes the value (stripped, never empty: an empty value means unset) and returns
what ``Settings`` holds, or raises ``Invalid`` saying what is allowed. It does not know
the variable's name or whether the value is a secret: the settings table
(engine/settings_table.py) knows both, and ``settings_from_mapping`` turns ``Invalid``
into the ``ConfigError`` an operator reads, with the value shown, masked or hidden.
Parsers with limits are built by a factory (``integer(0, 65535)``), so that each row of
the table states its own limits.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qs

from engine.alert_level import AlertLevel
from engine.realtime_models import DEFAULT_REALTIME_MODEL
from engine.secret import Secret
from engine.simulator import faults as simulator_faults
from engine.urls import split_url

if TYPE_CHECKING:
    from collections.abc import Callable
    from urllib.parse import SplitResult

    from engine.simulator.faults import Faults

_TWILIO_ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
# A plausibility check, not RFC 5322: it catches "ops" or "ops@" typos, not bad mailboxes.
_EMAIL = re.compile(r"[^@\s,]+@[^@\s,]+\.[^@\s,.]+")
_HOST = re.compile(r"[A-Za-z0-9._%:-]+")
_DIGITS = re.compile(r"[0-9]+")
# No exponent, sign, underscore, nan or inf: float() accepts all of those.
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
# The media path's readiness tick (engine/ready_poller.py): the most a frame may be held
# for it (a 20 ms frame could otherwise wait a whole frame).
MAX_READY_TICK_MS = 20.0
LOG_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}  # logging's numbers


class Invalid(ValueError):
    """A value a parser refuses; ``str(error)`` says what is allowed."""


def host(value: str) -> str:
    if _HOST.fullmatch(value) is None:
        raise Invalid("expected a host name or IP address to listen on (e.g. 127.0.0.1)")
    return value


def integer(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        # A regex first: int() would also take "+80", "8_080" and non-ASCII digits.
        if _DIGITS.fullmatch(value) is None or not low <= int(value) <= high:
            raise Invalid(f"expected an integer from {low} to {high}")
        return int(value)

    return parse


def seconds(low: float, high: float) -> Callable[[str], float]:
    """Seconds greater than ``low`` and at most ``high``."""

    def parse(value: str) -> float:
        if _DECIMAL.fullmatch(value) is None or not low < float(value) <= high:
            raise Invalid(f"expected a number of seconds greater than {low:g} and at most {high:g}")
        return float(value)

    return parse


def tick_ms(value: str) -> float | None:
    """Milliseconds from 0 to 20, or ``off`` (``None``)."""
    if value == "off":
        return None
    if _DECIMAL.fullmatch(value) is None or not 0 <= float(value) <= MAX_READY_TICK_MS:
        raise Invalid(f"expected off or milliseconds from 0 to {MAX_READY_TICK_MS:g}")
    return float(value)


def share(value: str) -> float:
    if _DECIMAL.fullmatch(value) is None or not 0 < float(value) <= 1:
        raise Invalid("expected a share greater than 0 and at most 1 (e.g. 0.25)")
    return float(value)


def price(value: str) -> float:
    if _DECIMAL.fullmatch(value) is None:
        raise Invalid("expected a price in USD, 0 or more (e.g. 0.12)")
    return float(value)


def faults(value: str) -> Faults:
    try:
        return simulator_faults.parse(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def directory(value: str) -> Path:
    return _resolved(
        value, "expected a directory path (a relative path is taken from the current directory)"
    )


def file_path(value: str) -> Path:
    return _resolved(value, "expected a file path")


def url(*schemes: str) -> Callable[[str], str]:
    """A URL with one of ``schemes`` that names a host (and a valid port, if any)."""

    def parse(value: str) -> str:
        if _split_url(value, schemes) is None:
            raise Invalid(
                f"expected a URL starting with {_schemes_text(schemes)} that names a host"
            )
        return value

    return parse


def base_url(value: str) -> str:
    """An http(s) API's base URL, without a trailing slash (paths are appended to it)."""
    return url("http", "https")(value).rstrip("/")


def public_url(value: str) -> str:
    parts = _split_url(value, ("http", "https"))
    if parts is None or parts.query or parts.fragment:
        raise Invalid(
            "expected a URL starting with http:// or https:// that names a host, without "
            "query or fragment (the address Twilio uses to reach this engine)"
        )
    return value.rstrip("/")


def database_url(value: str) -> str:
    parts = split_url(value)
    if (
        parts is None
        or parts.scheme.lower() not in ("postgresql", "postgres")
        or not (parts.hostname or parse_qs(parts.query).get("host"))
    ):
        raise Invalid(
            "expected a URL starting with postgresql:// or postgres:// that names a host "
            "(or has a host= query parameter); leave it unset to use the embedded Postgres"
        )
    return value


def secret(min_chars: int = 1) -> Callable[[str], Secret]:
    def parse(value: str) -> Secret:
        if len(value) < min_chars:
            raise Invalid(f"expected at least {min_chars} characters")
        return Secret(value)

    return parse


def model(value: str) -> str:
    if any(character.isspace() for character in value):
        raise Invalid(f"expected a model name without spaces (e.g. {DEFAULT_REALTIME_MODEL})")
    return value


def account_sid(value: str) -> str:
    if _TWILIO_ACCOUNT_SID.fullmatch(value) is None:
        raise Invalid("expected 'AC' followed by 32 hexadecimal digits")
    return value


def emails(value: str) -> str:
    addresses = [address.strip() for address in value.split(",")]
    if not all(_EMAIL.fullmatch(address) for address in addresses):
        raise Invalid(
            "expected an email address or a comma-separated list of them "
            "(e.g. ops@example.com,owner@example.com)"
        )
    return ",".join(addresses)


def email(value: str) -> str:
    if _EMAIL.fullmatch(value) is None:
        raise Invalid("expected one email address (e.g. alerts@example.com)")
    return value


def alert_level(value: str) -> AlertLevel:
    try:
        return AlertLevel.parse(value)
    except ValueError:
        raise Invalid("expected one of info, warning, error, critical (any case)") from None


def log_format(value: str) -> Literal["text", "json"]:
    if value.lower() not in ("text", "json"):
        raise Invalid("expected text or json")
    return "json" if value.lower() == "json" else "text"


def log_level(value: str) -> int:
    try:
        return LOG_LEVELS[value.lower()]
    except KeyError:
        raise Invalid("expected one of debug, info, warning, error (any case)") from None


def _split_url(value: str, schemes: tuple[str, ...]) -> SplitResult | None:
    """``value`` split, or ``None`` unless it has one of ``schemes``, a host and a valid
    port."""
    parts = split_url(value)
    if parts is None or parts.scheme.lower() not in schemes or not parts.hostname:
        return None
    return parts


def _resolved(value: str, expected: str) -> Path:
    try:
        return Path(value).expanduser().resolve()
    except (RuntimeError, ValueError, OSError):
        # RuntimeError: "~user" with no such user, or a symlink loop.
        raise Invalid(expected) from None


def _schemes_text(schemes: tuple[str, ...]) -> str:
    return " or ".join(f"{scheme}://" for scheme in schemes)
