"""The engine's settings: one frozen, validated record built from environment variables
and an optional ``.env`` file, as the settings table (engine/settings_table.py) declares.

Everything here is pure except ``load_settings`` reading the ``.env`` file. Every invalid
value raises ``ConfigError`` naming the variable, the value (hidden for secrets, a URL's
password masked) and what is allowed. Creating ``DATA_DIR`` and local tokens is
``engine.local_secrets``' job.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from engine.alert_level import AlertLevel
from engine.config_values import LOG_LEVELS, Invalid
from engine.dotenv import parse_env_file
from engine.errors import ConfigError

# Kept importable from here: the API's modules take Secret with Settings.
from engine.secret import Secret as Secret
from engine.settings_table import ENV_NAMES as ENV_NAMES
from engine.settings_table import SETTINGS, Shown

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from engine.simulator.faults import Faults

_PASSWORD_QUERY = re.compile(r"(?i)((?:^|&)password=)[^&]*")
_MASKED = frozenset(row.field for row in SETTINGS if row.shown is Shown.MASKED)
_HIDDEN = frozenset(row.field for row in SETTINGS if row.shown is Shown.HIDDEN)


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class Settings:
    """Validated configuration. Build it with ``settings_from_mapping`` or
    ``load_settings``; each field's environment variable is its name in upper case, and
    its row in engine/settings_table.py says what it holds (fields in the table's order)."""

    host: str
    port: int
    public_url: str
    # The Twilio media streams' listener: 0 = any free port; the URL Twilio must use for
    # it, None: PUBLIC_URL's host on MEDIA_PORT, ws:// or wss:// to match.
    media_port: int
    public_media_url: str | None
    database_url: str | None
    data_dir: Path
    admin_token: Secret | None
    metrics_token: Secret | None
    twilio_account_sid: str | None
    twilio_auth_token: Secret | None
    # Twilio's REST API (a live call's transfer); None when PORT is 0 and nothing is set.
    twilio_api_base_url: str | None
    openai_api_key: Secret | None
    openai_realtime_url: str
    openai_realtime_model: str
    alert_webhook_url: str | None
    alert_webhook_secret: Secret | None
    alert_email_recipient: str | None
    # None: the email channel picks the sender (SMTP_URL's user, or afterhours@<host>).
    alert_email_from: str | None
    smtp_url: str | None
    alert_min_level: AlertLevel
    drain_timeout_s: float
    max_concurrent_calls: int
    admit_max_cpu: float
    admit_max_loop_lag_s: float
    # Engine processes sharing PORT and MEDIA_PORT (SO_REUSEPORT) and the database:
    # `serve --workers N` sets WORKERS; it gives each child its WORKER_INDEX.
    workers: int
    worker_index: int | None
    engine_lease_s: float
    log_format: Literal["text", "json"]
    # The least severe record written (logging's level number: 10 debug ... 40 error).
    log_level: int
    model_connect_timeout_s: float
    model_session_max_s: float
    # The per-frame path (docs/performance.md, "The lean hot path").
    caller_frames_per_append: int
    mark_every_deltas: int
    # None ("off"): each media reader waits on Trio's own wait_readable.
    ready_tick_ms: float | None
    alert_error_rate: float
    alert_error_rate_window_s: float
    vapi_api_key: Secret | None
    # None when PORT is 0 and nothing is set.
    vapi_api_base_url: str | None
    vapi_server_secret: Secret | None
    vapi_create_timeout_s: float
    # None: the dashboard shows no configured comparison.
    comparison_rate_per_min_usd: float | None
    simulator_faults: Faults | None
    # None: the built-in price table (engine/pricing.py).
    prices_file: Path | None

    @property
    def worker_api_port(self) -> int | None:
        """A worker's own API port (PORT + 100 + index): its health and metrics, told
        apart from its siblings'."""
        return None if self.worker_index is None else self.port + 100 + self.worker_index

    @property
    def is_local(self) -> bool:
        """True when ``public_url`` points at this machine (localhost, 127.0.0.0/8, ::1)."""
        return _is_loopback(urlsplit(self.public_url).hostname or "")

    def secret_values(self) -> list[str]:
        """Every secret this configuration holds, revealed, for the log handler to mask:
        the secrets and the passwords inside URLs (never log this)."""
        revealed = [secret.reveal() for name in sorted(_HIDDEN) if (secret := getattr(self, name))]
        for name in sorted(_MASKED):
            url = getattr(self, name)
            password = urlsplit(url).password if url else None
            if password:
                revealed.append(password)
        return revealed

    def redacted(self) -> dict[str, str | None]:
        """Every setting by its variable name, safe for logs and health output."""
        return {f.name.upper(): _shown(f.name, getattr(self, f.name)) for f in fields(self)}

    def __repr__(self) -> str:
        # The generated repr would print passwords embedded in DATABASE_URL and SMTP_URL.
        shown = ", ".join(
            f"{f.name}={_safe_value(f.name, getattr(self, f.name))!r}" for f in fields(self)
        )
        return f"Settings({shown})"


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
    """Build and validate ``Settings`` from variable names to values, row by row of the
    settings table. Unknown names are rejected; surrounding whitespace is ignored and an
    empty value means unset."""
    for key in values:
        if key not in ENV_NAMES:
            # The value stays hidden: a misspelt secret name still holds a secret.
            raise ConfigError(key, None, _unknown_setting_text(key))
    raw = {key: value.strip() for key, value in values.items() if value.strip()}
    parsed: dict[str, Any] = {}
    for row in SETTINGS:
        text = raw.get(row.name)
        if text is None:
            if not isinstance(row.default, str):
                parsed[row.field] = None if row.default is None else row.default(parsed)
                continue
            text = row.default  # parsed and checked like a value that was set
        try:
            value = row.parse(text)
            problem = row.check(value, parsed) if row.check is not None else None
        except Invalid as error:
            problem = str(error)
        if problem is not None:
            raise ConfigError(row.name, _error_value(row.field, text), problem)
        parsed[row.field] = value
    return Settings(**parsed)


def load_settings(environ: Mapping[str, str], env_file: Path | None) -> Settings:
    """Settings from ``env_file`` (when given and present) overridden by ``environ``.

    Only the engine's own names are taken from ``environ``, which also holds PATH and
    the like; an empty variable there counts as unset, so the file's value applies.
    """
    merged = read_env_file(env_file) if env_file is not None else {}
    merged.update({name: environ[name] for name in ENV_NAMES if environ.get(name, "").strip()})
    return settings_from_mapping(merged)


def read_env_file(path: Path) -> dict[str, str]:
    """The settings a dotenv file assigns (``{}`` when it does not exist).

    Every key must be a setting: the file holds the engine's settings alone (other
    programs' variables belong in the environment, where names not ours are left
    alone), so a key nobody reads is a typo or a stale name, and it is refused with the
    closest name. Refusing only keys that share a prefix with ours would let a misspelt
    prefix through (``OPENIA_API_KEY``), and an ignored secret is the costly case: the
    engine would start without it.
    """
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


def _error_value(field: str, value: str) -> str | None:
    """What an error may show of ``field``'s value: nothing of a secret."""
    if field in _HIDDEN:
        return None
    return _url_for_display(field, value) if field in _MASKED else value


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
    if name in _MASKED and isinstance(value, str):
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
