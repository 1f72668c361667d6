"""The engine's settings: one frozen, validated record built from environment variables
and an optional ``.env`` file.

Everything here is pure except ``load_settings`` reading the ``.env`` file. Every invalid
value raises ``ConfigError`` naming the variable, the value (hidden for secrets) and what
is allowed. Creating ``DATA_DIR`` and local tokens is ``engine.local_secrets``' job.
"""

from __future__ import annotations

import difflib
import hmac
import ipaddress
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qs, urlsplit, urlunsplit

from engine.alert_level import AlertLevel
from engine.dotenv import parse_env_file
from engine.errors import ConfigError
from engine.realtime_models import DEFAULT_REALTIME_MODEL
from engine.simulator import faults

if TYPE_CHECKING:
    from collections.abc import Mapping
    from urllib.parse import SplitResult

    from engine.simulator.faults import Faults

ADMIN_TOKEN_MIN_CHARS = 16
PORT_RANGE = (0, 65535)
# The media path's readiness tick (engine/ready_poller.py): the default, and the most a
# frame may be held for it (a 20 ms frame could otherwise wait a whole frame).
DEFAULT_READY_TICK_MS: float | None = None  # off: measured, docs/performance.md
MAX_READY_TICK_MS = 20.0
DRAIN_TIMEOUT_MAX_S = 3600.0
MAX_CONCURRENT_CALLS_RANGE = (1, 100_000)

SIMULATED_TWILIO_PORT_OFFSET = 2
SIMULATED_VAPI_PORT_OFFSET = 3
VAPI_API_URL = "https://api.vapi.ai"
# Twilio waits 15 s for the voice webhook's TwiML; Vapi's create-call answers in well
# under a second when healthy. 3 s leaves the caller's fallback (this engine, or the
# on-call number) most of Twilio's budget.
VAPI_CREATE_TIMEOUT_DEFAULT_S = 3.0
VAPI_CREATE_TIMEOUT_MAX_S = 10.0
_TWILIO_ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
# A plausibility check, not RFC 5322: it catches "ops" or "ops@" typos, not bad mailboxes.
_EMAIL = re.compile(r"[^@\s,]+@[^@\s,]+\.[^@\s,.]+")
_HOST = re.compile(r"[A-Za-z0-9._%:-]+")
_DIGITS = re.compile(r"[0-9]+")
# No exponent, sign, underscore, nan or inf: float() accepts all of those.
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_PASSWORD_QUERY = re.compile(r"(?i)((?:^|&)password=)[^&]*")


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Secret:
    """A secret string that never shows its value in ``repr``, ``str`` or f-strings."""

    _value: str

    def reveal(self) -> str:
        """The secret itself: call this only where the value is sent or compared."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        # Constant time, because tokens are compared with what a client sent.
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class Settings:
    """Validated configuration. Build it with ``settings_from_mapping`` or
    ``load_settings``; each field's environment variable is its name in upper case."""

    host: str
    port: int
    public_url: str
    database_url: str | None
    data_dir: Path
    admin_token: Secret | None
    # A read-only token for GET /metrics, so that Prometheus does not hold a credential
    # that can delete projects; the admin token still opens /metrics too.
    metrics_token: Secret | None
    openai_api_key: Secret | None
    openai_realtime_url: str
    openai_realtime_model: str
    twilio_account_sid: str | None
    twilio_auth_token: Secret | None
    # Twilio's REST API (a live call's transfer): https://api.twilio.com with an account;
    # without one, the simulated Twilio `afterhours simulate` serves (127.0.0.1, PORT + 2;
    # None when PORT is 0 and nothing is set).
    twilio_api_base_url: str | None
    alert_webhook_url: str | None
    alert_webhook_secret: Secret | None
    alert_email_recipient: str | None
    # The alert email's sender (From and the SMTP envelope); None: SMTP_URL's user when it
    # is an address, else afterhours@<this host's name>, which many relays refuse.
    alert_email_from: str | None
    smtp_url: str | None
    alert_min_level: AlertLevel
    drain_timeout_s: float
    max_concurrent_calls: int
    log_format: Literal["text", "json"]
    # The least severe record written (logging's level number: 10 debug ... 40 error).
    log_level: int
    # The Twilio media streams have their own listener (the per-frame path does not go
    # through Hypercorn): its port (default PORT + 1; 0 = any free port), and the URL Twilio
    # must use for it (default: PUBLIC_URL's host on MEDIA_PORT, ws:// or wss:// to match).
    media_port: int
    public_media_url: str | None
    # The model: how long its handshake may take, and the longest one Realtime session
    # may live (OpenAI's cap has moved 15 -> 30 -> 60 min; calls renew before it).
    model_connect_timeout_s: float
    model_session_max_s: float
    # The per-frame path (docs/performance.md, "The lean hot path"): caller frames
    # joined into one input_audio_buffer.append (each extra frame holds the first one
    # back 20 ms), and a mark after every Nth audio delta (and at each response's end).
    caller_frames_per_append: int
    mark_every_deltas: int
    # Media sockets' readiness collected every this many ms and their readers woken in
    # one pass (engine/ready_poller.py); each frame waits at most this long more.
    # None ("off"): each reader waits on Trio's own wait_readable.
    ready_tick_ms: float | None
    # USD prices for the cost of each call (engine/pricing.py); None: the built-in table.
    prices_file: Path | None
    # highErrorRate: the share of failed calls (or function calls) over a rolling window.
    alert_error_rate: float
    alert_error_rate_window_s: float
    # Engine processes sharing PORT and MEDIA_PORT (SO_REUSEPORT) and the database:
    # `serve --workers N` sets WORKERS; it gives each child its WORKER_INDEX.
    workers: int
    worker_index: int | None
    # Each engine process's lease in the database (actors/store/leases.py), renewed every
    # quarter of it: once it expires, the process's calls still marked live are finalised
    # failed (engine_lost). 20 s: four heartbeats must fail in a row before a live engine
    # is taken for dead, and a dead one's calls leave the live view within half a minute.
    engine_lease_s: float
    # Admission by load: new calls are turned away politely while this process's CPU over
    # the last second (a share of one core: the engine is one thread) or its event-loop
    # lag is at or above these, so the calls already admitted keep their latency
    # (ADMIT_MAX_CPU=1 turns the CPU check off).
    admit_max_cpu: float
    admit_max_loop_lag_s: float
    # Vapi, for numbers on the vapi system (api/http/vapi_calls.py, api/http/vapi_events.py): the
    # private API key the voice webhook creates calls with; its base URL
    # (https://api.vapi.ai with a key; without one, the simulated Vapi `afterhours
    # simulate` serves on 127.0.0.1, PORT + 3; None when PORT is 0 and nothing is set);
    # the secret Vapi sends in x-vapi-secret with its server messages; and how long the
    # webhook waits for Vapi before the caller gets the project's fallback.
    vapi_api_key: Secret | None
    vapi_api_base_url: str | None
    vapi_server_secret: Secret | None
    vapi_create_timeout_s: float
    # The other system's price per minute (e.g. the platform the business came from), for
    # the dashboard's cost comparison; None: not shown.
    comparison_rate_per_min_usd: float | None
    # Faults the embedded simulated model (no OPENAI_API_KEY) plays, to see the engine
    # handle them from `afterhours simulate` (engine/simulator/faults.py); None: none.
    simulator_faults: Faults | None

    @property
    def worker_api_port(self) -> int | None:
        """A worker's own API port (PORT + 100 + index): its health and metrics, told
        apart from its siblings'."""
        return None if self.worker_index is None else self.port + 100 + self.worker_index

    @property
    def is_local(self) -> bool:
        """True when ``public_url`` points at this machine (localhost, 127.0.0.0/8, ::1)."""
        return _is_loopback(urlsplit(self.public_url).hostname or "")

    def redacted(self) -> dict[str, str | None]:
        """Every setting by its variable name, safe for logs and health output."""
        return {f.name.upper(): _shown(f.name, getattr(self, f.name)) for f in fields(self)}

    def __repr__(self) -> str:
        # The generated repr would print passwords embedded in DATABASE_URL and SMTP_URL.
        shown = ", ".join(
            f"{f.name}={_safe_value(f.name, getattr(self, f.name))!r}" for f in fields(self)
        )
        return f"Settings({shown})"


ENV_NAMES: tuple[str, ...] = tuple(f.name.upper() for f in fields(Settings))

_URLS_WITH_CREDENTIALS = frozenset({"database_url", "smtp_url", "alert_webhook_url"})


def dsn_for_display(url: str) -> str:
    """``url`` with its password replaced by ``***``, in the userinfo part and in a
    ``password=`` query parameter (``postgresql://user:***@host:5432/db``)."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    before_query, question_mark, query = rest.partition("?")
    # The last "@" ends the userinfo even when an unencoded "/" or "@" sits in the password,
    # so no part of the password can end up in what is shown.
    userinfo, at, host_and_path = before_query.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.partition(":")[0]
        before_query = f"{user}:***@{host_and_path}"
    query = _PASSWORD_QUERY.sub(r"\1***", query)
    return f"{scheme}://{before_query}{question_mark}{query}"


def settings_from_mapping(values: Mapping[str, str]) -> Settings:
    """Build and validate ``Settings`` from variable names to values. Unknown names are
    rejected; surrounding whitespace is ignored and an empty value means unset."""
    for key in values:
        if key not in ENV_NAMES:
            # The value stays hidden: a misspelt secret name still holds a secret.
            raise ConfigError(key, None, _unknown_setting_text(key))
    raw = {key: value.strip() for key, value in values.items() if value.strip()}
    host = _parse_host(raw.get("HOST", "127.0.0.1"))
    port = _parse_int("PORT", raw.get("PORT"), 8080, PORT_RANGE)
    workers = _parse_int("WORKERS", raw.get("WORKERS"), 1, (1, 64))
    if workers > 1 and (port == 0 or raw.get("MEDIA_PORT") == "0"):
        raise ConfigError(
            "WORKERS", str(workers), "several workers share fixed ports: set PORT and MEDIA_PORT"
        )
    admin_token = _parse_secret("ADMIN_TOKEN", raw.get("ADMIN_TOKEN"), ADMIN_TOKEN_MIN_CHARS)
    return Settings(
        host=host,
        port=port,
        public_url=_parse_public_url(raw.get("PUBLIC_URL"), _default_public_url(host, port)),
        database_url=_parse_database_url(raw.get("DATABASE_URL")),
        data_dir=_parse_data_dir(raw.get("DATA_DIR", "./.afterhours")),
        admin_token=admin_token,
        metrics_token=_parse_metrics_token(raw.get("METRICS_TOKEN"), admin_token),
        openai_api_key=_parse_secret("OPENAI_API_KEY", raw.get("OPENAI_API_KEY")),
        openai_realtime_url=_parse_url(
            "OPENAI_REALTIME_URL",
            raw.get("OPENAI_REALTIME_URL", "wss://api.openai.com/v1/realtime"),
            ("ws", "wss"),
        ),
        openai_realtime_model=_parse_model(
            raw.get("OPENAI_REALTIME_MODEL", DEFAULT_REALTIME_MODEL)
        ),
        twilio_account_sid=_parse_account_sid(raw.get("TWILIO_ACCOUNT_SID")),
        twilio_auth_token=_parse_secret("TWILIO_AUTH_TOKEN", raw.get("TWILIO_AUTH_TOKEN")),
        twilio_api_base_url=_parse_twilio_api_url(
            raw.get("TWILIO_API_BASE_URL"), account="TWILIO_ACCOUNT_SID" in raw, port=port
        ),
        alert_webhook_url=_parse_optional_url("ALERT_WEBHOOK_URL", raw.get("ALERT_WEBHOOK_URL")),
        alert_webhook_secret=_parse_secret("ALERT_WEBHOOK_SECRET", raw.get("ALERT_WEBHOOK_SECRET")),
        alert_email_recipient=_parse_emails(raw.get("ALERT_EMAIL_RECIPIENT")),
        alert_email_from=_parse_email("ALERT_EMAIL_FROM", raw.get("ALERT_EMAIL_FROM")),
        smtp_url=_parse_optional_url("SMTP_URL", raw.get("SMTP_URL"), ("smtp", "smtps")),
        alert_min_level=_parse_alert_level(raw.get("ALERT_MIN_LEVEL")),
        drain_timeout_s=_parse_seconds(
            "DRAIN_TIMEOUT_S", raw.get("DRAIN_TIMEOUT_S"), 30.0, (0.0, DRAIN_TIMEOUT_MAX_S)
        ),
        max_concurrent_calls=_parse_int(
            "MAX_CONCURRENT_CALLS", raw.get("MAX_CONCURRENT_CALLS"), 100, MAX_CONCURRENT_CALLS_RANGE
        ),
        log_format=_parse_log_format(raw.get("LOG_FORMAT")),
        log_level=_parse_log_level(raw.get("LOG_LEVEL")),
        media_port=_parse_int(
            "MEDIA_PORT", raw.get("MEDIA_PORT"), port + 1 if port else 0, PORT_RANGE
        ),
        public_media_url=_parse_optional_url(
            "PUBLIC_MEDIA_URL", raw.get("PUBLIC_MEDIA_URL"), ("ws", "wss")
        ),
        model_connect_timeout_s=_parse_seconds(
            "MODEL_CONNECT_TIMEOUT_S", raw.get("MODEL_CONNECT_TIMEOUT_S"), 10.0, (0.0, 60.0)
        ),
        model_session_max_s=_parse_seconds(
            "MODEL_SESSION_MAX_S", raw.get("MODEL_SESSION_MAX_S"), 3600.0, (5.0, 86400.0)
        ),
        caller_frames_per_append=_parse_int(
            "CALLER_FRAMES_PER_APPEND", raw.get("CALLER_FRAMES_PER_APPEND"), 1, (1, 5)
        ),
        mark_every_deltas=_parse_int("MARK_EVERY_DELTAS", raw.get("MARK_EVERY_DELTAS"), 2, (1, 10)),
        ready_tick_ms=_parse_tick_ms(
            "READY_TICK_MS", raw.get("READY_TICK_MS"), DEFAULT_READY_TICK_MS
        ),
        prices_file=_parse_optional_path("PRICES_FILE", raw.get("PRICES_FILE")),
        alert_error_rate=_parse_share("ALERT_ERROR_RATE", raw.get("ALERT_ERROR_RATE"), 0.25),
        alert_error_rate_window_s=_parse_seconds(
            "ALERT_ERROR_RATE_WINDOW_S", raw.get("ALERT_ERROR_RATE_WINDOW_S"), 300.0, (1.0, 86400.0)
        ),
        admit_max_cpu=_parse_share("ADMIT_MAX_CPU", raw.get("ADMIT_MAX_CPU"), 0.85),
        admit_max_loop_lag_s=_parse_seconds(
            "ADMIT_MAX_LOOP_LAG_S", raw.get("ADMIT_MAX_LOOP_LAG_S"), 0.04, (0.001, 10.0)
        ),
        workers=workers,
        worker_index=_parse_worker_index(raw.get("WORKER_INDEX"), workers),
        engine_lease_s=_parse_seconds(
            "ENGINE_LEASE_S", raw.get("ENGINE_LEASE_S"), 20.0, (0.5, 3600.0)
        ),
        vapi_api_key=_parse_secret("VAPI_API_KEY", raw.get("VAPI_API_KEY")),
        vapi_api_base_url=_parse_vapi_api_url(
            raw.get("VAPI_API_BASE_URL"), key="VAPI_API_KEY" in raw, port=port
        ),
        vapi_server_secret=_parse_secret("VAPI_SERVER_SECRET", raw.get("VAPI_SERVER_SECRET")),
        vapi_create_timeout_s=_parse_seconds(
            "VAPI_CREATE_TIMEOUT_S",
            raw.get("VAPI_CREATE_TIMEOUT_S"),
            VAPI_CREATE_TIMEOUT_DEFAULT_S,
            (0.0, VAPI_CREATE_TIMEOUT_MAX_S),
        ),
        comparison_rate_per_min_usd=_parse_price(
            "COMPARISON_RATE_PER_MIN_USD", raw.get("COMPARISON_RATE_PER_MIN_USD")
        ),
        simulator_faults=_parse_faults(raw.get("SIMULATOR_FAULTS")),
    )


def load_settings(environ: Mapping[str, str], env_file: Path | None) -> Settings:
    """Settings from ``env_file`` (when given and present) overridden by ``environ``.

    Only the engine's own names are taken from ``environ``, which also holds PATH and
    the like; an empty variable there counts as unset, so the file's value applies.
    """
    merged = read_env_file(env_file) if env_file is not None else {}
    merged.update({name: environ[name] for name in ENV_NAMES if environ.get(name, "").strip()})
    return settings_from_mapping(merged)


def read_env_file(path: Path) -> dict[str, str]:
    """The settings a dotenv file assigns (``{}`` when it does not exist). Unknown keys
    are refused, which catches typos such as ``ALERT_MIN_LEVLE``."""
    assignments: dict[str, str] = {}
    for assignment in parse_env_file(path):
        if assignment.key not in ENV_NAMES:
            where = f"in {path} line {assignment.lineno}"
            raise ConfigError(
                assignment.key, None, f"{where}: {_unknown_setting_text(assignment.key)}"
            )
        assignments[assignment.key] = assignment.value
    return assignments


def _unknown_setting_text(key: str) -> str:
    close = difflib.get_close_matches(key.upper(), ENV_NAMES, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown setting{hint}; known: {', '.join(ENV_NAMES)}"


def _parse_host(value: str) -> str:
    if _HOST.fullmatch(value) is None:
        raise ConfigError(
            "HOST", value, "expected a host name or IP address to listen on (e.g. 127.0.0.1)"
        )
    return value


def _default_public_url(host: str, port: int) -> str:
    shown_host = f"[{host}]" if ":" in host else host  # IPv6 literals need brackets in URLs
    return f"http://{shown_host}:{port}"


def _parse_data_dir(value: str) -> Path:
    try:
        return Path(value).expanduser().resolve()
    except (RuntimeError, ValueError, OSError):
        # RuntimeError: "~user" with no such user, or a symlink loop.
        raise ConfigError(
            "DATA_DIR",
            value,
            "expected a directory path (a relative path is taken from the current directory)",
        ) from None


def _parse_int(name: str, value: str | None, default: int, allowed: tuple[int, int]) -> int:
    if value is None:
        return default
    low, high = allowed
    # A regex first: int() would also take "+80", "8_080" and non-ASCII digits.
    if _DIGITS.fullmatch(value) is None or not low <= int(value) <= high:
        raise ConfigError(name, value, f"expected an integer from {low} to {high}")
    return int(value)


def _parse_tick_ms(name: str, value: str | None, default: float | None) -> float | None:
    """Milliseconds from 0 to 20, or ``off``."""
    if value is None:
        return default
    if value == "off":
        return None
    if _DECIMAL.fullmatch(value) is None or not 0 <= float(value) <= MAX_READY_TICK_MS:
        raise ConfigError(
            name, value, f"expected off or milliseconds from 0 to {MAX_READY_TICK_MS:g}"
        )
    return float(value)


def _parse_seconds(
    name: str, value: str | None, default: float, allowed: tuple[float, float]
) -> float:
    """Seconds greater than ``allowed[0]`` and at most ``allowed[1]``."""
    if value is None:
        return default
    low, high = allowed
    if _DECIMAL.fullmatch(value) is None or not low < float(value) <= high:
        raise ConfigError(
            name, value, f"expected a number of seconds greater than {low:g} and at most {high:g}"
        )
    return float(value)


def _parse_price(name: str, value: str | None) -> float | None:
    if value is None:
        return None
    if _DECIMAL.fullmatch(value) is None:
        raise ConfigError(name, value, "expected a price in USD, 0 or more (e.g. 0.12)")
    return float(value)


def _parse_worker_index(value: str | None, workers: int) -> int | None:
    if value is None:
        return None
    if _DIGITS.fullmatch(value) is None or int(value) >= workers:
        raise ConfigError("WORKER_INDEX", value, f"expected 0 to {workers - 1} (set by --workers)")
    return int(value)


def _parse_share(name: str, value: str | None, default: float) -> float:
    if value is None:
        return default
    if _DECIMAL.fullmatch(value) is None or not 0 < float(value) <= 1:
        raise ConfigError(name, value, "expected a share greater than 0 and at most 1 (e.g. 0.25)")
    return float(value)


def _parse_faults(value: str | None) -> Faults | None:
    if value is None:
        return None
    try:
        return faults.parse(value)
    except ValueError as exc:
        raise ConfigError("SIMULATOR_FAULTS", value, str(exc)) from None


def _parse_optional_path(name: str, value: str | None) -> Path | None:
    if value is None:
        return None
    try:
        return Path(value).expanduser().resolve()
    except (RuntimeError, ValueError, OSError):
        raise ConfigError(name, value, "expected a file path") from None


def _split_url(value: str, schemes: tuple[str, ...]) -> SplitResult | None:
    """``value`` split, or ``None`` unless it has one of ``schemes``, a host and a valid
    port."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        return None
    if parts.scheme.lower() not in schemes or not parts.hostname:
        return None
    return parts


def _schemes_text(schemes: tuple[str, ...]) -> str:
    return " or ".join(f"{scheme}://" for scheme in schemes)


def _parse_url(name: str, value: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
    if _split_url(value, schemes) is None:
        shown = (
            _url_for_display(name.lower(), value)
            if name.lower() in _URLS_WITH_CREDENTIALS
            else value
        )
        raise ConfigError(
            name, shown, f"expected a URL starting with {_schemes_text(schemes)} that names a host"
        )
    return value


def _parse_optional_url(
    name: str, value: str | None, schemes: tuple[str, ...] = ("http", "https")
) -> str | None:
    return None if value is None else _parse_url(name, value, schemes)


def _parse_public_url(value: str | None, default: str) -> str:
    if value is None:
        return default
    parts = _split_url(value, ("http", "https"))
    if parts is None or parts.query or parts.fragment:
        raise ConfigError(
            "PUBLIC_URL",
            value,
            "expected a URL starting with http:// or https:// that names a host, without "
            "query or fragment (the address Twilio uses to reach this engine)",
        )
    return value.rstrip("/")


def _parse_database_url(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme.lower() not in ("postgresql", "postgres")
        or not (parts.hostname or parse_qs(parts.query).get("host"))
    ):
        raise ConfigError(
            "DATABASE_URL",
            dsn_for_display(value),
            "expected a URL starting with postgresql:// or postgres:// that names a host "
            "(or has a host= query parameter); leave it unset to use the embedded Postgres",
        )
    return value


def _parse_secret(name: str, value: str | None, min_chars: int = 1) -> Secret | None:
    if value is None:
        return None
    if len(value) < min_chars:
        raise ConfigError(name, None, f"expected at least {min_chars} characters")
    return Secret(value)


def _parse_metrics_token(value: str | None, admin_token: Secret | None) -> Secret | None:
    token = _parse_secret("METRICS_TOKEN", value, ADMIN_TOKEN_MIN_CHARS)
    if token is not None and admin_token is not None and token == admin_token:
        # The point of a metrics token is that it opens less than the admin token.
        raise ConfigError("METRICS_TOKEN", None, "expected a token other than ADMIN_TOKEN")
    return token


def _parse_model(value: str) -> str:
    if any(character.isspace() for character in value):
        raise ConfigError(
            "OPENAI_REALTIME_MODEL",
            value,
            f"expected a model name without spaces (e.g. {DEFAULT_REALTIME_MODEL})",
        )
    return value


def _parse_twilio_api_url(value: str | None, *, account: bool, port: int) -> str | None:
    if value is not None:
        return _parse_url("TWILIO_API_BASE_URL", value).rstrip("/")
    if account:
        return "https://api.twilio.com"
    # Next to MEDIA_PORT's default (PORT + 1): the simulated Twilio's REST API.
    simulated_port = port + SIMULATED_TWILIO_PORT_OFFSET
    if not port or simulated_port > PORT_RANGE[1]:
        return None
    return f"http://127.0.0.1:{simulated_port}"


def _parse_vapi_api_url(value: str | None, *, key: bool, port: int) -> str | None:
    if value is not None:
        return _parse_url("VAPI_API_BASE_URL", value).rstrip("/")
    if key:
        return VAPI_API_URL
    # Beside the simulated Twilio's (PORT + 2): the simulated Vapi's API.
    simulated_port = port + SIMULATED_VAPI_PORT_OFFSET
    if not port or simulated_port > PORT_RANGE[1]:
        return None
    return f"http://127.0.0.1:{simulated_port}"


def _parse_account_sid(value: str | None) -> str | None:
    if value is not None and _TWILIO_ACCOUNT_SID.fullmatch(value) is None:
        raise ConfigError(
            "TWILIO_ACCOUNT_SID", value, "expected 'AC' followed by 32 hexadecimal digits"
        )
    return value


def _parse_emails(value: str | None) -> str | None:
    if value is None:
        return None
    addresses = [address.strip() for address in value.split(",")]
    if not all(_EMAIL.fullmatch(address) for address in addresses):
        raise ConfigError(
            "ALERT_EMAIL_RECIPIENT",
            value,
            "expected an email address or a comma-separated list of them "
            "(e.g. ops@example.com,owner@example.com)",
        )
    return ",".join(addresses)


def _parse_email(name: str, value: str | None) -> str | None:
    if value is not None and _EMAIL.fullmatch(value) is None:
        raise ConfigError(name, value, "expected one email address (e.g. alerts@example.com)")
    return value


def _parse_alert_level(value: str | None) -> AlertLevel:
    if value is None:
        return AlertLevel.ERROR
    try:
        return AlertLevel.parse(value)
    except ValueError:
        raise ConfigError(
            "ALERT_MIN_LEVEL", value, "expected one of info, warning, error, critical (any case)"
        ) from None


def _parse_log_format(value: str | None) -> Literal["text", "json"]:
    if value is None:
        return "text"
    if value.lower() not in ("text", "json"):
        raise ConfigError("LOG_FORMAT", value, "expected text or json")
    return "json" if value.lower() == "json" else "text"


LOG_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}  # logging's numbers


def _parse_log_level(value: str | None) -> int:
    if value is None:
        return LOG_LEVELS["info"]
    try:
        return LOG_LEVELS[value.lower()]
    except KeyError:
        raise ConfigError(
            "LOG_LEVEL", value, "expected one of debug, info, warning, error (any case)"
        ) from None


def is_loopback_url(url: str) -> bool:
    """True when ``url``'s host is this machine (localhost, 127.0.0.0/8, ::1)."""
    return _is_loopback(urlsplit(url).hostname or "")


def _is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _safe_value(name: str, value: object) -> object:
    if name in _URLS_WITH_CREDENTIALS and isinstance(value, str):
        return _url_for_display(name, value)
    return value


def _url_for_display(name: str, url: str) -> str:
    """``url`` with any password hidden; the webhook also loses its query, which
    services use to carry a token."""
    shown = dsn_for_display(url)
    if name != "alert_webhook_url":
        return shown
    try:
        parts = urlsplit(shown)
    except ValueError:
        return shown.partition("?")[0].partition("#")[0]
    return urlunsplit(parts._replace(query="", fragment=""))


def _shown(name: str, value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, Secret):
        return "<set>"
    if isinstance(value, AlertLevel):
        return value.name.lower()
    if isinstance(value, float):
        return f"{value:g}"
    if name == "log_level":
        return next(text for text, number in LOG_LEVELS.items() if number == value)
    return str(_safe_value(name, value))
