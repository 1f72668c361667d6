"""Settings: defaults, validation messages, secret hiding and ``.env`` parsing."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from engine.alert_level import AlertLevel
from engine.config import (
    ENV_NAMES,
    Secret,
    Settings,
    dsn_for_display,
    load_settings,
    settings_from_mapping,
)
from engine.errors import ConfigError, StartupError
from engine.simulator.faults import Faults

if TYPE_CHECKING:
    from collections.abc import Mapping

ALL_INTERFACES = "0.0.0.0"  # noqa: S104 -- a value under test; nothing binds here
SID = "AC" + "0123456789abcdef" * 2
ADMIN = "admin-token-0123456789"
METRICS = "metrics-token-0123456789"
OPENAI = "sk-openai-secret-value"
TWILIO = "twilio-secret-value"
WEBHOOK_SECRET = "webhook-hmac-secret"
DB_PASSWORD = "db-pass-w0rd"
SMTP_PASSWORD = "smtp-pass-w0rd"
WEBHOOK_QUERY_TOKEN = "hook-query-token"
SECRET_STRINGS = (ADMIN, METRICS, OPENAI, TWILIO, WEBHOOK_SECRET, DB_PASSWORD, SMTP_PASSWORD)

FULL: dict[str, str] = {
    "HOST": ALL_INTERFACES,
    "PORT": "9000",
    "PUBLIC_URL": "https://calls.example.com/",
    "DATABASE_URL": f"postgresql://engine:{DB_PASSWORD}@db.internal:5432/afterhours",
    "DATA_DIR": "/var/lib/afterhours",
    "ADMIN_TOKEN": ADMIN,
    "METRICS_TOKEN": METRICS,
    "OPENAI_API_KEY": OPENAI,
    "OPENAI_REALTIME_URL": "wss://realtime.example.com/v1/realtime",
    "OPENAI_REALTIME_MODEL": "gpt-realtime-mini",
    "TWILIO_ACCOUNT_SID": SID,
    "TWILIO_AUTH_TOKEN": TWILIO,
    "TWILIO_API_BASE_URL": "http://127.0.0.1:9999",
    "ALERT_WEBHOOK_URL": f"https://hooks.example.com/alert?token={WEBHOOK_QUERY_TOKEN}",
    "ALERT_WEBHOOK_SECRET": WEBHOOK_SECRET,
    "ALERT_EMAIL_RECIPIENT": "ops@example.com, owner@example.com",
    "ALERT_EMAIL_FROM": "alerts@example.com",
    "SMTP_URL": f"smtps://mailer:{SMTP_PASSWORD}@smtp.example.com:465",
    "ALERT_MIN_LEVEL": "Warning",
    "DRAIN_TIMEOUT_S": "12.5",
    "MAX_CONCURRENT_CALLS": "7",
    "LOG_FORMAT": "json",
    "LOG_LEVEL": "Warning",
    "MEDIA_PORT": "9001",
    "PUBLIC_MEDIA_URL": "wss://calls.example.com/twilio/media",
    "MODEL_CONNECT_TIMEOUT_S": "5",
    "MODEL_SESSION_MAX_S": "1800",
    "CALLER_FRAMES_PER_APPEND": "2",
    "MARK_EVERY_DELTAS": "4",
    "READY_TICK_MS": "5",
    "PRICES_FILE": "/etc/afterhours/prices.toml",
    "ALERT_ERROR_RATE": "0.5",
    "ALERT_ERROR_RATE_WINDOW_S": "600",
    "WORKERS": "4",
    "WORKER_INDEX": "2",
    "COMPARISON_RATE_PER_MIN_USD": "0.12",
    "VAPI_API_KEY": "vapi-private-key-full",
    "VAPI_API_BASE_URL": "https://vapi.example.com",
    "VAPI_SERVER_SECRET": "vapi-server-secret-full",
    "VAPI_CREATE_TIMEOUT_S": "2.5",
    "ADMIT_MAX_CPU": "0.7",
    "ADMIT_MAX_LOOP_LAG_S": "0.05",
    "ENGINE_LEASE_S": "30",
    "SIMULATOR_FAULTS": "late_transcription, fail_responses=2:rate_limit_exceeded",
}


def _error(values: Mapping[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping(values)
    return caught.value


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = settings_from_mapping({})
    assert settings == Settings(
        host="127.0.0.1",
        port=8080,
        public_url="http://127.0.0.1:8080",
        database_url=None,
        data_dir=tmp_path.resolve() / ".afterhours",
        admin_token=None,
        metrics_token=None,
        openai_api_key=None,
        openai_realtime_url="wss://api.openai.com/v1/realtime",
        openai_realtime_model="gpt-realtime-1.5",
        twilio_account_sid=None,
        twilio_auth_token=None,
        twilio_api_base_url="http://127.0.0.1:8082",  # no account: the simulated Twilio
        alert_webhook_url=None,
        alert_webhook_secret=None,
        alert_email_recipient=None,
        alert_email_from=None,
        smtp_url=None,
        alert_min_level=AlertLevel.ERROR,
        drain_timeout_s=30.0,
        max_concurrent_calls=100,
        log_format="text",
        log_level=logging.INFO,
        media_port=8081,
        public_media_url=None,
        model_connect_timeout_s=10.0,
        model_session_max_s=3600.0,
        caller_frames_per_append=1,
        mark_every_deltas=2,
        ready_tick_ms=None,
        prices_file=None,
        alert_error_rate=0.25,
        alert_error_rate_window_s=300.0,
        workers=1,
        worker_index=None,
        engine_lease_s=20.0,
        admit_max_cpu=0.85,
        admit_max_loop_lag_s=0.04,
        vapi_api_key=None,
        vapi_api_base_url="http://127.0.0.1:8083",  # no key: the simulated Vapi
        vapi_server_secret=None,
        vapi_create_timeout_s=3.0,
        comparison_rate_per_min_usd=None,
        simulator_faults=None,
    )
    assert settings.is_local
    assert settings_from_mapping({"PORT": "0"}).media_port == 0


def test_twilios_rest_api_is_twilio_with_an_account_and_the_simulated_one_without() -> None:
    account = {"TWILIO_ACCOUNT_SID": "AC" + "a" * 32}
    assert settings_from_mapping(account).twilio_api_base_url == "https://api.twilio.com"
    assert settings_from_mapping({"PORT": "9000"}).twilio_api_base_url == "http://127.0.0.1:9002"
    # Any free port: nowhere to find the simulated Twilio unless told.
    assert settings_from_mapping({"PORT": "0"}).twilio_api_base_url is None
    assert settings_from_mapping({"PORT": "65535"}).twilio_api_base_url is None
    told = {"PORT": "0", "TWILIO_API_BASE_URL": "http://127.0.0.1:7000/"}
    assert settings_from_mapping(told).twilio_api_base_url == "http://127.0.0.1:7000"


def test_vapis_api_is_vapi_with_a_key_and_the_simulated_one_without() -> None:
    keyed = settings_from_mapping({"VAPI_API_KEY": "vapi-private-key"})
    assert keyed.vapi_api_base_url == "https://api.vapi.ai"
    assert "vapi-private-key" not in repr(keyed)
    assert settings_from_mapping({"PORT": "9000"}).vapi_api_base_url == "http://127.0.0.1:9003"
    assert settings_from_mapping({"PORT": "0"}).vapi_api_base_url is None
    told = {"VAPI_API_BASE_URL": "http://127.0.0.1:7001/"}
    assert settings_from_mapping(told).vapi_api_base_url == "http://127.0.0.1:7001"
    with pytest.raises(ConfigError, match="VAPI_CREATE_TIMEOUT_S"):
        settings_from_mapping({"VAPI_CREATE_TIMEOUT_S": "15"})  # past Twilio's own budget


def test_every_variable_set() -> None:
    settings = settings_from_mapping(FULL)
    assert settings.host == ALL_INTERFACES
    assert settings.port == 9000
    assert settings.public_url == "https://calls.example.com"
    assert settings.database_url == FULL["DATABASE_URL"]
    assert settings.data_dir == Path("/var/lib/afterhours")
    assert settings.admin_token == Secret(ADMIN)
    assert settings.metrics_token == Secret(METRICS)
    assert settings.openai_api_key == Secret(OPENAI)
    assert settings.openai_realtime_url == FULL["OPENAI_REALTIME_URL"]
    assert settings.openai_realtime_model == "gpt-realtime-mini"
    assert settings.twilio_account_sid == SID
    assert settings.twilio_auth_token == Secret(TWILIO)
    assert settings.twilio_api_base_url == "http://127.0.0.1:9999"
    assert settings.alert_webhook_url == FULL["ALERT_WEBHOOK_URL"]
    assert settings.alert_webhook_secret == Secret(WEBHOOK_SECRET)
    assert settings.alert_email_recipient == "ops@example.com,owner@example.com"
    assert settings.alert_email_from == "alerts@example.com"
    assert settings.smtp_url == FULL["SMTP_URL"]
    assert settings.alert_min_level is AlertLevel.WARNING
    assert settings.drain_timeout_s == 12.5
    assert settings.ready_tick_ms == 5.0
    assert settings.max_concurrent_calls == 7
    assert settings.log_format == "json"
    assert settings.log_level == logging.WARNING
    assert settings.vapi_api_key == Secret("vapi-private-key-full")
    assert settings.vapi_api_base_url == "https://vapi.example.com"
    assert settings.vapi_server_secret == Secret("vapi-server-secret-full")
    assert settings.vapi_create_timeout_s == 2.5
    assert not settings.is_local


def test_full_sets_every_variable() -> None:
    # The other tests read FULL as "every setting set": a new setting must join it.
    assert set(FULL) == set(ENV_NAMES)


def test_settings_are_frozen() -> None:
    settings = settings_from_mapping({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variable", "value", "attribute", "expected"),
    [
        ("PORT", "0", "port", 0),
        ("PORT", "65535", "port", 65535),
        ("PORT", " 8081 ", "port", 8081),
        ("HOST", "::1", "host", "::1"),
        ("HOST", "engine.local", "host", "engine.local"),
        ("PUBLIC_URL", "http://localhost:8080/base/", "public_url", "http://localhost:8080/base"),
        ("DATABASE_URL", "postgres://db/x", "database_url", "postgres://db/x"),
        (
            "DATABASE_URL",
            "postgresql:///afterhours?host=/run/postgresql",
            "database_url",
            "postgresql:///afterhours?host=/run/postgresql",
        ),
        (
            "OPENAI_REALTIME_URL",
            "ws://127.0.0.1:9001/rt",
            "openai_realtime_url",
            "ws://127.0.0.1:9001/rt",
        ),
        ("TWILIO_ACCOUNT_SID", "AC" + "A" * 32, "twilio_account_sid", "AC" + "A" * 32),
        (
            "TWILIO_API_BASE_URL",
            "https://twilio.test/",
            "twilio_api_base_url",
            "https://twilio.test",
        ),
        ("ALERT_WEBHOOK_URL", "http://hooks.test/x", "alert_webhook_url", "http://hooks.test/x"),
        ("ALERT_EMAIL_RECIPIENT", "ops@example.com", "alert_email_recipient", "ops@example.com"),
        ("ALERT_EMAIL_FROM", "alerts@example.com", "alert_email_from", "alerts@example.com"),
        ("SMTP_URL", "smtp://mail.test:25", "smtp_url", "smtp://mail.test:25"),
        ("ALERT_MIN_LEVEL", "info", "alert_min_level", AlertLevel.INFO),
        ("ALERT_MIN_LEVEL", "CRITICAL", "alert_min_level", AlertLevel.CRITICAL),
        ("DRAIN_TIMEOUT_S", "3600", "drain_timeout_s", 3600.0),
        ("DRAIN_TIMEOUT_S", "0.5", "drain_timeout_s", 0.5),
        ("MAX_CONCURRENT_CALLS", "1", "max_concurrent_calls", 1),
        ("MAX_CONCURRENT_CALLS", "100000", "max_concurrent_calls", 100_000),
        ("LOG_FORMAT", "JSON", "log_format", "json"),
        ("ADMIN_TOKEN", "x" * 16, "admin_token", Secret("x" * 16)),
        ("METRICS_TOKEN", "m" * 16, "metrics_token", Secret("m" * 16)),
        ("LOG_LEVEL", "debug", "log_level", logging.DEBUG),
        ("LOG_LEVEL", "ERROR", "log_level", logging.ERROR),
        ("MODEL_CONNECT_TIMEOUT_S", "0.5", "model_connect_timeout_s", 0.5),
        ("MODEL_SESSION_MAX_S", "10", "model_session_max_s", 10.0),
        ("CALLER_FRAMES_PER_APPEND", "5", "caller_frames_per_append", 5),
        ("MARK_EVERY_DELTAS", "1", "mark_every_deltas", 1),
        ("READY_TICK_MS", "off", "ready_tick_ms", None),
        ("READY_TICK_MS", "0", "ready_tick_ms", 0.0),
        ("READY_TICK_MS", "2.5", "ready_tick_ms", 2.5),
        ("READY_TICK_MS", "20", "ready_tick_ms", 20.0),
        ("PRICES_FILE", "/etc/p.toml", "prices_file", Path("/etc/p.toml")),
        ("ALERT_ERROR_RATE", "1", "alert_error_rate", 1.0),
        ("ALERT_ERROR_RATE_WINDOW_S", "60", "alert_error_rate_window_s", 60.0),
        ("WORKERS", "1", "workers", 1),
        ("COMPARISON_RATE_PER_MIN_USD", "0.09", "comparison_rate_per_min_usd", 0.09),
        ("ADMIT_MAX_CPU", "1", "admit_max_cpu", 1.0),
        ("ADMIT_MAX_LOOP_LAG_S", "0.1", "admit_max_loop_lag_s", 0.1),
        ("SIMULATOR_FAULTS", "reset_handshakes=1", "simulator_faults", Faults(reset_handshakes=1)),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 30 else None,
)
def test_valid_value(variable: str, value: str, attribute: str, expected: object) -> None:
    assert getattr(settings_from_mapping({variable: value}), attribute) == expected


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        pytest.param(
            "PORT", "abc", "invalid PORT='abc': expected an integer from 0 to 65535", id="port-text"
        ),
        pytest.param(
            "PORT",
            "65536",
            "invalid PORT='65536': expected an integer from 0 to 65535",
            id="port-high",
        ),
        pytest.param(
            "PORT",
            "-1",
            "invalid PORT='-1': expected an integer from 0 to 65535",
            id="port-negative",
        ),
        pytest.param(
            "MODEL_CONNECT_TIMEOUT_S",
            "0",
            "invalid MODEL_CONNECT_TIMEOUT_S='0': expected a number of seconds greater than 0 "
            "and at most 60",
            id="connect-timeout-zero",
        ),
        pytest.param(
            "MODEL_SESSION_MAX_S",
            "5",
            "invalid MODEL_SESSION_MAX_S='5': expected a number of seconds greater than 5 "
            "and at most 86400",
            id="session-max-short",
        ),
        pytest.param(
            "ALERT_ERROR_RATE",
            "1.5",
            "invalid ALERT_ERROR_RATE='1.5': expected a share greater than 0 and at most 1 "
            "(e.g. 0.25)",
            id="error-rate-high",
        ),
        pytest.param(
            "WORKER_INDEX",
            "1",
            "invalid WORKER_INDEX='1': expected 0 to 0 (set by --workers)",
            id="worker-index-alone",
        ),
        pytest.param(
            "PORT",
            "8_080",
            "invalid PORT='8_080': expected an integer from 0 to 65535",
            id="port-underscore",
        ),
        pytest.param(
            "HOST",
            "bad host",
            "invalid HOST='bad host': expected a host name or IP address to listen on "
            "(e.g. 127.0.0.1)",
            id="host-space",
        ),
        pytest.param(
            "PUBLIC_URL",
            "ftp://example.com",
            "invalid PUBLIC_URL='ftp://example.com': expected a URL starting with http:// or "
            "https:// that names a host, without query or fragment (the address Twilio uses "
            "to reach this engine)",
            id="public-url-scheme",
        ),
        pytest.param(
            "PUBLIC_URL",
            "https://",
            "invalid PUBLIC_URL='https://': expected a URL starting with http:// or https:// "
            "that names a host, without query or fragment (the address Twilio uses to reach "
            "this engine)",
            id="public-url-no-host",
        ),
        pytest.param(
            "DATABASE_URL",
            "mysql://db/x",
            "invalid DATABASE_URL='mysql://db/x': expected a URL starting with postgresql:// or "
            "postgres:// that names a host (or has a host= query parameter); leave it unset to "
            "use the embedded Postgres",
            id="database-url-scheme",
        ),
        pytest.param(
            "DATABASE_URL",
            "postgresql:///afterhours",
            "invalid DATABASE_URL='postgresql:///afterhours': expected a URL starting with "
            "postgresql:// or postgres:// that names a host (or has a host= query parameter); "
            "leave it unset to use the embedded Postgres",
            id="database-url-no-host",
        ),
        pytest.param(
            "OPENAI_REALTIME_URL",
            "https://api.openai.com/v1/realtime",
            "invalid OPENAI_REALTIME_URL='https://api.openai.com/v1/realtime': expected a URL "
            "starting with ws:// or wss:// that names a host",
            id="realtime-url-scheme",
        ),
        pytest.param(
            "OPENAI_REALTIME_MODEL",
            "gpt realtime",
            "invalid OPENAI_REALTIME_MODEL='gpt realtime': expected a model name without "
            "spaces (e.g. gpt-realtime-1.5)",
            id="model-space",
        ),
        pytest.param(
            "TWILIO_ACCOUNT_SID",
            "AC123",
            "invalid TWILIO_ACCOUNT_SID='AC123': expected 'AC' followed by 32 hexadecimal digits",
            id="sid-short",
        ),
        pytest.param(
            "TWILIO_ACCOUNT_SID",
            "SK" + "0" * 32,
            f"invalid TWILIO_ACCOUNT_SID='SK{'0' * 32}': expected 'AC' followed by 32 "
            "hexadecimal digits",
            id="sid-prefix",
        ),
        pytest.param(
            "TWILIO_API_BASE_URL",
            "api.twilio.com",
            "invalid TWILIO_API_BASE_URL='api.twilio.com': expected a URL starting with "
            "http:// or https:// that names a host",
            id="twilio-base-no-scheme",
        ),
        pytest.param(
            "ALERT_WEBHOOK_URL",
            "https://hooks.test:notaport/x",
            "invalid ALERT_WEBHOOK_URL='https://hooks.test:notaport/x': expected a URL "
            "starting with http:// or https:// that names a host",
            id="webhook-bad-port",
        ),
        pytest.param(
            "ALERT_EMAIL_RECIPIENT",
            "ops@example.com, owner",
            "invalid ALERT_EMAIL_RECIPIENT='ops@example.com, owner': expected an email address "
            "or a comma-separated list of them (e.g. ops@example.com,owner@example.com)",
            id="email-list-bad-item",
        ),
        pytest.param(
            "ALERT_EMAIL_FROM",
            "ops@example.com,owner@example.com",
            "invalid ALERT_EMAIL_FROM='ops@example.com,owner@example.com': expected one email "
            "address (e.g. alerts@example.com)",
            id="email-from-a-list",
        ),
        pytest.param(
            "ALERT_EMAIL_FROM",
            "afterhours",
            "invalid ALERT_EMAIL_FROM='afterhours': expected one email address "
            "(e.g. alerts@example.com)",
            id="email-from-no-domain",
        ),
        pytest.param(
            "SMTP_URL",
            "http://mail.test",
            "invalid SMTP_URL='http://mail.test': expected a URL starting with smtp:// or "
            "smtps:// that names a host",
            id="smtp-scheme",
        ),
        pytest.param(
            "ALERT_MIN_LEVEL",
            "debug",
            "invalid ALERT_MIN_LEVEL='debug': expected one of info, warning, error, critical "
            "(any case)",
            id="level-unknown",
        ),
        pytest.param(
            "DRAIN_TIMEOUT_S",
            "0",
            "invalid DRAIN_TIMEOUT_S='0': expected a number of seconds greater than 0 and at "
            "most 3600",
            id="drain-zero",
        ),
        pytest.param(
            "DRAIN_TIMEOUT_S",
            "3600.5",
            "invalid DRAIN_TIMEOUT_S='3600.5': expected a number of seconds greater than 0 and "
            "at most 3600",
            id="drain-high",
        ),
        pytest.param(
            "DRAIN_TIMEOUT_S",
            "nan",
            "invalid DRAIN_TIMEOUT_S='nan': expected a number of seconds greater than 0 and at "
            "most 3600",
            id="drain-nan",
        ),
        pytest.param(
            "READY_TICK_MS",
            "20.5",
            "invalid READY_TICK_MS='20.5': expected off or milliseconds from 0 to 20",
            id="tick-high",
        ),
        pytest.param(
            "READY_TICK_MS",
            "-1",
            "invalid READY_TICK_MS='-1': expected off or milliseconds from 0 to 20",
            id="tick-negative",
        ),
        pytest.param(
            "MAX_CONCURRENT_CALLS",
            "0",
            "invalid MAX_CONCURRENT_CALLS='0': expected an integer from 1 to 100000",
            id="calls-zero",
        ),
        pytest.param(
            "MAX_CONCURRENT_CALLS",
            "100001",
            "invalid MAX_CONCURRENT_CALLS='100001': expected an integer from 1 to 100000",
            id="calls-high",
        ),
        pytest.param(
            "LOG_FORMAT",
            "yaml",
            "invalid LOG_FORMAT='yaml': expected text or json",
            id="log-format",
        ),
        pytest.param(
            "ADMIN_TOKEN",
            "short",
            "invalid ADMIN_TOKEN=(value hidden): expected at least 16 characters",
            id="admin-token-short",
        ),
        pytest.param(
            "METRICS_TOKEN",
            "short",
            "invalid METRICS_TOKEN=(value hidden): expected at least 16 characters",
            id="metrics-token-short",
        ),
        pytest.param(
            "LOG_LEVEL",
            "verbose",
            "invalid LOG_LEVEL='verbose': expected one of debug, info, warning, error (any case)",
            id="log-level",
        ),
        pytest.param(
            "SIMULATOR_FAULTS",
            "late_transcript",
            "invalid SIMULATOR_FAULTS='late_transcript': unknown fault 'late_transcript'; known: "
            "fail_responses=N[:code], reset_handshakes=N, late_transcription, omit_function_name, "
            "ignore_output_format",
            id="simulator-faults-unknown",
        ),
    ],
)
def test_invalid_value(variable: str, value: str, message: str) -> None:
    error = _error({variable: value})
    assert error.variable == variable
    assert str(error) == message


@pytest.mark.parametrize(
    ("variable", "value", "secret", "shown"),
    [
        pytest.param("ADMIN_TOKEN", "tiny-secret", "tiny-secret", None, id="admin-token"),
        pytest.param("METRICS_TOKEN", "tiny-metrics", "tiny-metrics", None, id="metrics-token"),
        pytest.param(
            "DATABASE_URL",
            f"mysql://engine:{DB_PASSWORD}@db/x",
            DB_PASSWORD,
            "mysql://engine:***@db/x",
            id="database-url-password",
        ),
        pytest.param(
            "DATABASE_URL",
            f"mysql://db/x?password={DB_PASSWORD}&sslmode=require",
            DB_PASSWORD,
            None,
            id="database-url-query-password",
        ),
        pytest.param(
            "SMTP_URL",
            f"imap://mailer:{SMTP_PASSWORD}@mail.test",
            SMTP_PASSWORD,
            "imap://mailer:***@mail.test",
            id="smtp-url-password",
        ),
        pytest.param(
            "ALERT_WEBHOOK_URL",
            f"ftp://hooks.test/x?token={WEBHOOK_QUERY_TOKEN}",
            WEBHOOK_QUERY_TOKEN,
            "ftp://hooks.test/x",
            id="webhook-query-token",
        ),
    ],
)
def test_invalid_secret_value_is_hidden(
    variable: str, value: str, secret: str, shown: str | None
) -> None:
    error = _error({variable: value})
    assert secret not in str(error)
    if shown is not None:
        assert error.value == shown


def test_a_metrics_token_equal_to_the_admin_token_is_refused_without_showing_it() -> None:
    error = _error({"ADMIN_TOKEN": ADMIN, "METRICS_TOKEN": ADMIN})
    assert error.variable == "METRICS_TOKEN"
    assert ADMIN not in str(error)
    assert "other than ADMIN_TOKEN" in str(error)


def test_database_url_error_survives_unencoded_slash_in_password() -> None:
    error = _error({"DATABASE_URL": "postgresql://engine:pa/ss@db/x"})
    assert error.value == "postgresql://engine:***@db/x"


def test_secrets_absent_from_repr_and_redacted() -> None:
    settings = settings_from_mapping(FULL)
    shown_repr = repr(settings)
    shown_redacted = str(settings.redacted())
    for secret in (*SECRET_STRINGS, WEBHOOK_QUERY_TOKEN):
        assert secret not in shown_repr
        assert secret not in shown_redacted
    assert str(settings.admin_token) == "Secret('********')"
    assert f"{settings.admin_token}" == "Secret('********')"


def test_redacted_lists_every_setting() -> None:
    redacted = settings_from_mapping(FULL).redacted()
    assert tuple(redacted) == ENV_NAMES
    assert redacted["ADMIN_TOKEN"] == "<set>"
    assert redacted["METRICS_TOKEN"] == "<set>"
    assert redacted["LOG_LEVEL"] == "warning"
    assert redacted["DATABASE_URL"] == "postgresql://engine:***@db.internal:5432/afterhours"
    assert redacted["SMTP_URL"] == "smtps://mailer:***@smtp.example.com:465"
    assert redacted["ALERT_WEBHOOK_URL"] == "https://hooks.example.com/alert"
    assert redacted["PORT"] == "9000"
    assert redacted["ALERT_MIN_LEVEL"] == "warning"
    assert redacted["DRAIN_TIMEOUT_S"] == "12.5"
    assert redacted["DATA_DIR"] == "/var/lib/afterhours"
    assert settings_from_mapping({}).redacted()["OPENAI_API_KEY"] is None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://user:pw@host:5432/db", "postgresql://user:***@host:5432/db"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        (
            "postgresql://host/db?password=pw&sslmode=require",
            "postgresql://host/db?password=***&sslmode=require",
        ),
        ("smtps://u:p@ss@mail.test:465", "smtps://u:***@mail.test:465"),
        ("not a url", "not a url"),
    ],
    ids=["userinfo", "no-password", "query", "at-in-password", "not-a-url"],
)
def test_dsn_for_display(url: str, shown: str) -> None:
    assert dsn_for_display(url) == shown


def test_secret_behaviour() -> None:
    secret = Secret("value-123")
    assert repr(secret) == "Secret('********')"
    assert secret.reveal() == "value-123"
    assert secret == Secret("value-123")
    assert secret != Secret("other")
    assert secret != "value-123"
    assert hash(secret) == hash(Secret("value-123"))
    assert secret
    assert not Secret("")


@pytest.mark.parametrize(
    ("values", "public_url"),
    [
        ({}, "http://127.0.0.1:8080"),
        ({"HOST": ALL_INTERFACES, "PORT": "0"}, f"http://{ALL_INTERFACES}:0"),
        ({"HOST": "::1", "PORT": "9000"}, "http://[::1]:9000"),
        ({"HOST": ALL_INTERFACES, "PUBLIC_URL": "https://x.test"}, "https://x.test"),
    ],
    ids=["defaults", "host-and-port", "ipv6-host", "explicit-wins"],
)
def test_public_url_default_derived_from_host_and_port(
    values: dict[str, str], public_url: str
) -> None:
    assert settings_from_mapping(values).public_url == public_url


@pytest.mark.parametrize(
    ("public_url", "is_local"),
    [
        ("http://localhost:8080", True),
        ("http://LOCALHOST", True),
        ("http://127.0.0.1:8080", True),
        ("http://127.8.9.10", True),
        ("http://[::1]:8080", True),
        ("https://calls.example.com", False),
        ("http://0.0.0.0:8080", False),
        ("http://10.0.0.5", False),
        ("http://localhost.example.com", False),
    ],
)
def test_is_local(public_url: str, is_local: bool) -> None:
    assert settings_from_mapping({"PUBLIC_URL": public_url}).is_local is is_local


def test_empty_values_count_as_unset() -> None:
    settings = settings_from_mapping({"PORT": "", "ADMIN_TOKEN": "  ", "DATABASE_URL": ""})
    assert settings.port == 8080
    assert settings.admin_token is None
    assert settings.database_url is None


def test_unknown_key_in_mapping_rejected() -> None:
    error = _error({"ALERT_MIN_LEVLE": "info"})
    assert error.variable == "ALERT_MIN_LEVLE"
    assert error.value is None
    assert str(error).startswith(
        "invalid ALERT_MIN_LEVLE=(value hidden): unknown setting (did you mean "
        "ALERT_MIN_LEVEL?); known: HOST, PORT, PUBLIC_URL,"
    )


def test_unknown_key_with_secret_value_hidden() -> None:
    error = _error({"ADMIN_TOKN": ADMIN})
    assert ADMIN not in str(error)


@pytest.mark.parametrize("level", ["info", "warning", "error", "critical"])
def test_alert_level_parse(level: str) -> None:
    assert AlertLevel.parse(level.upper()) is AlertLevel[level.upper()]


def test_alert_level_order() -> None:
    assert AlertLevel.INFO < AlertLevel.WARNING < AlertLevel.ERROR < AlertLevel.CRITICAL
    with pytest.raises(ValueError, match="unknown alert level"):
        AlertLevel.parse("verbose")


# --- .env files ---------------------------------------------------------------------


def _env_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / ".env"
    path.write_text(text, encoding="utf-8")
    return path


def test_env_file_syntax(tmp_path: Path) -> None:
    path = _env_file(
        tmp_path,
        "# afterhours settings\n"
        "\n"
        f"HOST={ALL_INTERFACES}\n"
        "export PORT=9001\n"
        "PUBLIC_URL = 'https://calls.example.com' # the tunnel\n"
        'OPENAI_REALTIME_MODEL="gpt-realtime-mini"\n'
        "ADMIN_TOKEN='with # hash and spaces '\n"
        "LOG_FORMAT=json # inline comment\n"
        "   # indented comment\n",
    )
    settings = load_settings({}, path)
    assert settings.host == ALL_INTERFACES
    assert settings.port == 9001
    assert settings.public_url == "https://calls.example.com"
    assert settings.openai_realtime_model == "gpt-realtime-mini"
    assert settings.admin_token == Secret("with # hash and spaces")
    assert settings.log_format == "json"


@pytest.mark.parametrize(
    ("line", "lineno"),
    [
        ("JUST A SENTENCE", 2),
        ("PORT='9000", 2),
        ('PORT="9000" trailing', 2),
        ("1PORT=9000", 2),
        ("export", 2),
    ],
    ids=["no-equals", "unclosed-quote", "text-after-quote", "bad-key", "bare-export"],
)
def test_env_file_malformed_line(tmp_path: Path, line: str, lineno: int) -> None:
    path = _env_file(tmp_path, f"HOST=127.0.0.1\n{line}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings({}, path)
    assert caught.value.variable == f"{path}:{lineno}"
    assert str(caught.value).startswith(
        f"invalid {path}:{lineno}=(value hidden): expected KEY=value"
    )


def test_env_file_unknown_key_rejected(tmp_path: Path) -> None:
    path = _env_file(tmp_path, "# typo below\nALERT_MIN_LEVLE=info\n")
    with pytest.raises(ConfigError) as caught:
        load_settings({}, path)
    assert caught.value.variable == "ALERT_MIN_LEVLE"
    assert f"in {path} line 2: unknown setting (did you mean ALERT_MIN_LEVEL?)" in str(caught.value)


@pytest.mark.parametrize(
    ("key", "closest"),
    [
        ("ADMIN_TOKN", "ADMIN_TOKEN"),
        ("admin_token", "ADMIN_TOKEN"),
        ("OPENIA_API_KEY", "OPENAI_API_KEY"),  # a misspelt prefix is caught too
        ("DRAIN_TIMEOUT", "DRAIN_TIMEOUT_S"),
    ],
)
def test_env_file_typo_names_the_key_and_the_closest_setting(
    tmp_path: Path, key: str, closest: str
) -> None:
    path = _env_file(tmp_path, f"PORT=9000\n{key}={ADMIN}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings({}, path)
    assert caught.value.variable == key
    assert f"in {path} line 2: unknown setting (did you mean {closest}?)" in str(caught.value)
    assert ADMIN not in str(caught.value)  # a misspelt secret's name still holds a secret


def test_env_file_key_of_another_program_is_refused(tmp_path: Path) -> None:
    """The file is the engine's own (read by --env-file, not sourced into a shell): a key
    no setting resembles has no reader either, and is refused with the known names."""
    path = _env_file(tmp_path, "POSTGRES_PASSWORD=pw\n")
    with pytest.raises(ConfigError) as caught:
        load_settings({}, path)
    assert str(caught.value) == (
        f"invalid POSTGRES_PASSWORD=(value hidden): in {path} line 1: unknown setting; "
        f"known: {', '.join(ENV_NAMES)}"
    )


def test_secret_values_are_every_secret_and_every_urls_password() -> None:
    """What the log handler masks, derived from the table's secret and masked rows."""
    webhook = "https://hook:hook-pass-w0rd@hooks.example.com/alert"
    settings = settings_from_mapping(FULL | {"ALERT_WEBHOOK_URL": webhook})
    assert sorted(settings.secret_values()) == sorted(
        [*SECRET_STRINGS, "vapi-private-key-full", "vapi-server-secret-full", "hook-pass-w0rd"]
    )
    assert settings_from_mapping({"DATABASE_URL": "postgresql://db/x"}).secret_values() == []


def test_environment_wins_over_file(tmp_path: Path) -> None:
    path = _env_file(tmp_path, f"PORT=9001\nHOST={ALL_INTERFACES}\nLOG_FORMAT=json\n")
    settings = load_settings({"PORT": "9002", "LOG_FORMAT": "", "PATH": "/usr/bin"}, path)
    assert settings.port == 9002
    assert settings.host == ALL_INTERFACES
    # An empty variable counts as unset, so the file's value applies.
    assert settings.log_format == "json"


def test_environment_unrelated_variables_ignored() -> None:
    settings = load_settings({"PATH": "/usr/bin", "HOME": "/root", "PORT": "9003"}, None)
    assert settings.port == 9003


def test_missing_env_file_is_fine(tmp_path: Path) -> None:
    assert load_settings({}, tmp_path / "absent.env").port == 8080


def test_env_file_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match=f"cannot read env file {tmp_path}"):
        load_settings({}, tmp_path)


def test_env_file_value_errors_name_the_variable(tmp_path: Path) -> None:
    path = _env_file(tmp_path, "PORT=eighty\n")
    with pytest.raises(ConfigError, match=r"invalid PORT='eighty': expected an integer"):
        load_settings({}, path)
