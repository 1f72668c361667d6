"""Every setting the engine reads, one row each: the single place a setting is declared.

A row gives the environment variable, its parser (engine/config_values.py, with the
limits the row allows), its default, whether the value is a secret, and the line the
README's configuration table shows for it. From this table come the validation
(``settings_from_mapping`` in engine/config.py), the names a ``.env`` file may use and the
suggestion for a misspelt one, what is masked in errors, ``repr`` and logs, and the
README's table itself (``python -m engine.settings_doc``; a test keeps them equal).

Rows are in the README's order, which is also ``Settings``' field order (a test checks
it): a row's derived default and its check read only the rows above it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from engine import config_values as v
from engine.realtime_models import DEFAULT_REALTIME_MODEL

# What the rows above a row parsed, by field name (the variable in lower case).
Parsed = Mapping[str, Any]

ADMIN_TOKEN_MIN_CHARS = 16
PORT_RANGE = (0, 65535)
WORKERS_RANGE = (1, 64)
DRAIN_TIMEOUT_MAX_S = 3600.0
MAX_CONCURRENT_CALLS_RANGE = (1, 100_000)
SIMULATED_TWILIO_PORT_OFFSET = 2
SIMULATED_VAPI_PORT_OFFSET = 3
TWILIO_API_URL = "https://api.twilio.com"
VAPI_API_URL = "https://api.vapi.ai"
# Twilio waits 15 s for the voice webhook's TwiML; Vapi's create-call answers in well
# under a second when healthy. 3 s (the default) leaves the caller's fallback (this
# engine, or the on-call number) most of Twilio's budget.
VAPI_CREATE_TIMEOUT_MAX_S = 10.0


class Shown(enum.Enum):
    """How a value may appear in errors, ``repr``, ``redacted()`` and logs."""

    PLAIN = "plain"
    # A secret: never shown (errors say "(value hidden)", redacted() "<set>"), and the
    # log handler masks it wherever it turns up.
    HIDDEN = "hidden"
    # A URL that may carry a password: shown with the password as *** (the alert
    # webhook's also without its query, which services use to carry a token); the
    # password is masked in logs.
    MASKED = "masked"


@dataclass(frozen=True, slots=True)
class Setting:
    """One environment variable. ``default`` is either the text used when the variable
    is unset (parsed like a set value, and shown as the README's default) or a function
    of the rows above (then ``default_doc`` says what it gives), or ``None``: unset
    stays ``None``. ``check`` returns what is allowed when the parsed value conflicts
    with a row above, else ``None``."""

    name: str
    parse: Callable[[str], Any]
    doc: str
    default: str | Callable[[Parsed], Any] | None = None
    default_doc: str = "unset"
    check: Callable[[Any, Parsed], str | None] | None = None
    shown: Shown = Shown.PLAIN
    # Set by the engine itself, never by an operator: not in the README's table.
    internal: bool = False

    @property
    def field(self) -> str:
        """The ``Settings`` field this row fills."""
        return self.name.lower()

    @property
    def default_text(self) -> str:
        """The README's default column."""
        return f"`{self.default}`" if isinstance(self.default, str) else self.default_doc


def _public_url(parsed: Parsed) -> str:
    host: str = parsed["host"]
    shown_host = f"[{host}]" if ":" in host else host  # IPv6 literals need brackets in URLs
    return f"http://{shown_host}:{parsed['port']}"


def _media_port(parsed: Parsed) -> int:
    port: int = parsed["port"]
    return port + 1 if port else 0


def _simulated_url(parsed: Parsed, offset: int) -> str | None:
    """A simulator's API next to MEDIA_PORT's default (PORT + 1); ``None`` when PORT is
    0 (any free port: nowhere to find it unless told)."""
    port: int = parsed["port"]
    if not port or port + offset > PORT_RANGE[1]:
        return None
    return f"http://127.0.0.1:{port + offset}"


def _twilio_api_url(parsed: Parsed) -> str | None:
    if parsed["twilio_account_sid"] is not None:
        return TWILIO_API_URL
    return _simulated_url(parsed, SIMULATED_TWILIO_PORT_OFFSET)


def _vapi_api_url(parsed: Parsed) -> str | None:
    if parsed["vapi_api_key"] is not None:
        return VAPI_API_URL
    return _simulated_url(parsed, SIMULATED_VAPI_PORT_OFFSET)


def _other_than_admin_token(token: object, parsed: Parsed) -> str | None:
    # The point of a metrics token is that it opens less than the admin token.
    if parsed["admin_token"] is not None and token == parsed["admin_token"]:
        return "expected a token other than ADMIN_TOKEN"
    return None


def _fixed_ports_for_workers(workers: int, parsed: Parsed) -> str | None:
    if workers > 1 and (parsed["port"] == 0 or parsed["media_port"] == 0):
        return "several workers share fixed ports: set PORT and MEDIA_PORT"
    return None


def _below_workers(index: int, parsed: Parsed) -> str | None:
    workers: int = parsed["workers"]
    return f"expected 0 to {workers - 1} (set by --workers)" if index >= workers else None


_WS = ("ws", "wss")
_HTTP = ("http", "https")

SETTINGS: tuple[Setting, ...] = (
    Setting("HOST", v.host, "address the API listens on", default="127.0.0.1"),
    Setting(
        "PORT",
        v.integer(*PORT_RANGE),
        "port the API listens on (`0`: any free port)",
        default="8080",
    ),
    Setting(
        "PUBLIC_URL",
        v.public_url,
        "the base URL Twilio uses to reach this engine (signatures are checked against it)",
        default=_public_url,
        default_doc="`http://HOST:PORT`",
    ),
    # The Twilio media streams have their own listener (the per-frame path does not go
    # through Hypercorn).
    Setting(
        "MEDIA_PORT",
        v.integer(*PORT_RANGE),
        "port of the Twilio media stream listener (`0`: any free port)",
        default=_media_port,
        default_doc="`PORT` + 1",
    ),
    Setting(
        "PUBLIC_MEDIA_URL",
        v.url(*_WS),
        "the stream URL Twilio is given (set it when a proxy routes media streams)",
        default_doc="`ws(s)://PUBLIC_URL's host:MEDIA_PORT/twilio/media`",
    ),
    Setting(
        "DATABASE_URL",
        v.database_url,
        "`postgresql://user:password@host:5432/db`",
        default_doc="unset: embedded PostgreSQL",
        shown=Shown.MASKED,
    ),
    Setting(
        "DATA_DIR",
        v.directory,
        "generated tokens and the embedded PostgreSQL's data",
        default="./.afterhours",
    ),
    Setting(
        "ADMIN_TOKEN",
        v.secret(ADMIN_TOKEN_MIN_CHARS),
        f"token for the admin and analytics routes ({ADMIN_TOKEN_MIN_CHARS}+ characters)",
        default_doc="generated when local",
        shown=Shown.HIDDEN,
    ),
    # So that Prometheus does not hold a credential that can delete projects.
    Setting(
        "METRICS_TOKEN",
        v.secret(ADMIN_TOKEN_MIN_CHARS),
        f"a read-only token ({ADMIN_TOKEN_MIN_CHARS}+ characters, not the admin token) that "
        "opens `GET /metrics` and nothing else, for Prometheus "
        "([operations.md](docs/operations.md#scraping-with-prometheus))",
        default_doc="unset: `/metrics` takes the admin token only",
        check=_other_than_admin_token,
        shown=Shown.HIDDEN,
    ),
    Setting("TWILIO_ACCOUNT_SID", v.account_sid, "`AC` + 32 hex digits"),
    Setting(
        "TWILIO_AUTH_TOKEN",
        v.secret(),
        "checks `X-Twilio-Signature`; required with a public `PUBLIC_URL`",
        default_doc="generated when local",
        shown=Shown.HIDDEN,
    ),
    Setting(
        "TWILIO_API_BASE_URL",
        v.base_url,
        "Twilio's REST API, used to transfer a live call to the on-call number",
        default=_twilio_api_url,
        default_doc=f"`{TWILIO_API_URL}` with `TWILIO_ACCOUNT_SID`; without it "
        f"`http://127.0.0.1:PORT+{SIMULATED_TWILIO_PORT_OFFSET}` (the simulated Twilio; "
        "unset when `PORT` is 0)",
    ),
    Setting("OPENAI_API_KEY", v.secret(), "the Realtime model's key", shown=Shown.HIDDEN),
    Setting(
        "OPENAI_REALTIME_URL",
        v.url(*_WS),
        "Realtime WebSocket URL",
        default="wss://api.openai.com/v1/realtime",
    ),
    Setting(
        "OPENAI_REALTIME_MODEL",
        v.model,
        "Realtime model name, for every project that names none of its own (a project's "
        "`model`). The default is a current GA model (`gpt-realtime`, the default before, is "
        "deprecated: shutdown announced for 2027-01-20), at the same prices as "
        "`gpt-realtime`, and not a reasoning model (`gpt-realtime-2` costs first-audio "
        "latency and 24 rather than 16 USD per million text tokens out). A deprecated model "
        "is logged at start-up (one warning line); a model without prices stops the start "
        "unless `PRICES_FILE` prices it",
        default=DEFAULT_REALTIME_MODEL,
    ),
    Setting("ALERT_WEBHOOK_URL", v.url(*_HTTP), "where alerts are posted", shown=Shown.MASKED),
    Setting(
        "ALERT_WEBHOOK_SECRET",
        v.secret(),
        "HMAC-SHA256 key for the webhook's signature",
        shown=Shown.HIDDEN,
    ),
    Setting("ALERT_EMAIL_RECIPIENT", v.emails, "comma-separated addresses for alert email"),
    Setting(
        "ALERT_EMAIL_FROM",
        v.email,
        "the alert email's sender (its `From` and the SMTP envelope's); one address. Set it "
        "when your mail relay only accepts mail from your own domain",
        # None here; the email channel picks the sender (many relays refuse the fallback).
        default_doc="`SMTP_URL`'s user when it is an address, else `afterhours@<host name>`",
    ),
    Setting(
        "SMTP_URL",
        v.url("smtp", "smtps"),
        "`smtp://user:password@host:587` or `smtps://…`",
        shown=Shown.MASKED,
    ),
    Setting(
        "ALERT_MIN_LEVEL",
        v.alert_level,
        "`info`, `warning`, `error` or `critical`: the least severe alert sent outside",
        default="error",
    ),
    Setting(
        "DRAIN_TIMEOUT_S",
        v.seconds(0.0, DRAIN_TIMEOUT_MAX_S),
        "how long live calls get to finish on shutdown",
        default="30",
    ),
    Setting(
        "MAX_CONCURRENT_CALLS",
        v.integer(*MAX_CONCURRENT_CALLS_RANGE),
        "calls beyond this are turned away politely",
        default="100",
    ),
    # Admission by load: new calls are turned away while this process's CPU over the
    # last second (a share of one core: the engine is one thread) or its event-loop lag
    # is at or above these, so the calls already admitted keep their latency.
    Setting(
        "ADMIT_MAX_CPU",
        v.share,
        "new callers are turned away politely while this process's projected CPU (a share of "
        "one core) is at or above this; `1` turns it off "
        "([deployment.md](docs/deployment.md#admission-by-load))",
        default="0.85",
    ),
    Setting(
        "ADMIT_MAX_LOOP_LAG_S",
        v.seconds(0.001, 10.0),
        "... or while its event loop runs this late",
        default="0.04",
    ),
    Setting(
        "WORKERS",
        v.integer(*WORKERS_RANGE),
        "engine processes sharing `PORT` and `MEDIA_PORT` (`serve --workers N` sets it); each "
        "worker also answers on `PORT` + 100 + its index",
        default="1",
        check=_fixed_ports_for_workers,
    ),
    Setting(
        "WORKER_INDEX",
        v.integer(0, WORKERS_RANGE[1] - 1),
        "this worker's index, given to each worker by `serve --workers N`",
        check=_below_workers,
        internal=True,
    ),
    # 20 s: four heartbeats must fail in a row before a live engine is taken for dead, and
    # a dead one's calls leave the live view within half a minute.
    Setting(
        "ENGINE_LEASE_S",
        v.seconds(0.5, 3600.0),
        "each engine process's lease in the database, renewed every quarter of it; once it "
        "expires, that process's calls still shown live are finalised `failed` "
        "(`engine_lost`) by any engine ([operations.md](docs/operations.md#engine-lost-calls))",
        default="20",
    ),
    Setting("LOG_FORMAT", v.log_format, "`text` or `json` (one object per line)", default="text"),
    Setting(
        "LOG_LEVEL",
        v.log_level,
        "`debug`, `info`, `warning` or `error`: the least severe log record written "
        "(`warning` also drops the access log, [operations.md](docs/operations.md#logs))",
        default="info",
    ),
    Setting(
        "MODEL_CONNECT_TIMEOUT_S",
        v.seconds(0.0, 60.0),
        "how long the model's handshake may take (a caller hears silence meanwhile)",
        default="10",
    ),
    # OpenAI's cap has moved 15 -> 30 -> 60 min.
    Setting(
        "MODEL_SESSION_MAX_S",
        v.seconds(5.0, 86400.0),
        "the model's session cap: calls renew their session before it (or before the "
        "server's `expires_at`)",
        default="3600",
    ),
    Setting(
        "CALLER_FRAMES_PER_APPEND",
        v.integer(1, 5),
        "caller frames (20 ms each) joined into one `input_audio_buffer.append`; `2` costs "
        "less CPU at light load and holds every other frame back 20 ms (measured in "
        'docs/performance.md, "The lean hot path")',
        default="1",
    ),
    Setting(
        "MARK_EVERY_DELTAS",
        v.integer(1, 10),
        "a Twilio `mark` after every Nth model audio delta (and always after an answer's "
        "last): fewer messages both ways; a barge-in then cuts the answer at most N-1 deltas "
        "short of what was heard",
        default="2",
    ),
    Setting(
        "READY_TICK_MS",
        v.tick_ms,
        "`off`: each media read waits on Trio's own readiness; a number of ms (0-20): one "
        "task collects every media socket's readiness each tick and wakes their readers in "
        "one pass, which measured 3-7 % less CPU per call-second for up to one tick more "
        'latency per hop (docs/performance.md, "One wake-up per batch")',
        default="off",  # measured, docs/performance.md
    ),
    Setting(
        "ALERT_ERROR_RATE",
        v.share,
        "share of failed calls (or function calls) over the window that raises `highErrorRate`",
        default="0.25",
    ),
    Setting(
        "ALERT_ERROR_RATE_WINDOW_S",
        v.seconds(1.0, 86400.0),
        "the rolling window for `ALERT_ERROR_RATE` (an alert at most once per window)",
        default="300",
    ),
    Setting(
        "VAPI_API_KEY",
        v.secret(),
        "Vapi's private API key: the voice webhook creates calls to numbers on the `vapi` "
        "system at Vapi with it ([deployment.md](docs/deployment.md#vapi)); unset, those "
        "callers get their project's `vapi_fallback` (or, with the built-in simulators, the "
        "simulated Vapi)",
        shown=Shown.HIDDEN,
    ),
    Setting(
        "VAPI_API_BASE_URL",
        v.base_url,
        "Vapi's API",
        default=_vapi_api_url,
        default_doc=f"`{VAPI_API_URL}` with `VAPI_API_KEY`; without it "
        f"`http://127.0.0.1:PORT+{SIMULATED_VAPI_PORT_OFFSET}` (the simulated Vapi that "
        "`afterhours call` and `simulate` serve; unset when `PORT` is 0)",
    ),
    Setting(
        "VAPI_SERVER_SECRET",
        v.secret(),
        "the secret set on Vapi's server URL (`PUBLIC_URL/vapi/events`), checked against "
        "`x-vapi-secret`",
        default_doc="unset: `POST /vapi/events` refuses every message",
        shown=Shown.HIDDEN,
    ),
    Setting(
        "VAPI_CREATE_TIMEOUT_S",
        v.seconds(0.0, VAPI_CREATE_TIMEOUT_MAX_S),
        f"how long the voice webhook waits for Vapi (at most {VAPI_CREATE_TIMEOUT_MAX_S:g}; "
        "Twilio waits 15 s) before the caller gets the project's `vapi_fallback`",
        default="3",
    ),
    Setting(
        "COMPARISON_RATE_PER_MIN_USD",
        v.price,
        "Vapi's price per minute as configured: shown on the dashboard, labelled "
        '"configured, not measured", only until a Vapi call exists (then Vapi\'s measured '
        "cost per minute)",
    ),
    Setting(
        "SIMULATOR_FAULTS",
        v.faults,
        "faults the embedded simulated model plays (no `OPENAI_API_KEY`), to watch the engine "
        "handle them from `afterhours simulate`: e.g. `fail_responses=2:rate_limit_exceeded, "
        "late_transcription, reset_handshakes=1, omit_function_name, ignore_output_format`",
    ),
    Setting(
        "PRICES_FILE",
        v.file_path,
        "a TOML file whose `[prices]` table overrides the USD prices used for call costs "
        "(keys as in `engine/pricing.py`'s `Prices`, e.g. `audio_out_per_m = 64.0`, "
        "`twilio_inbound_per_min = 0.0085`, `transcription_audio_in_per_m = 3.0`): plain "
        'keys apply to every model, a sub-table such as `[prices."gpt-realtime-mini"]` to '
        "one model or family only. A model the built-in table does not know needs all six "
        "token prices there ([Call costs](#call-costs))",
        default_doc="unset: built-in prices",
    ),
)

BY_NAME: Mapping[str, Setting] = {row.name: row for row in SETTINGS}
ENV_NAMES: tuple[str, ...] = tuple(BY_NAME)
