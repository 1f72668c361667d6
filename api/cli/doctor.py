"""``afterhours doctor``: what stands between this configuration and answered calls, one
line per check, each with what to do.

Checks, in order: the configuration (the environment over ``.env``, as ``serve`` reads
them); the database (DATABASE_URL connected to and asked its version and migrations, or
the embedded PostgreSQL's binaries looked for); the model endpoint (a TCP connection and
a TLS handshake to OPENAI_REALTIME_URL's host, or "simulated" without OPENAI_API_KEY);
Twilio's REST API the same way (or simulated); whether PUBLIC_URL is local (Twilio cannot
reach this machine then); and whether PORT and MEDIA_PORT are free. Exit 0 with no error
(warnings allowed), 1 otherwise.

Nothing here sends a credential anywhere: the model and Twilio checks stop after the TLS
handshake, before any request; a DSN is shown with its password as ``***``. Every network
check runs in a daemon thread given ``timeout_s``: a name lookup that hangs (no DNS) is
bounded too, which a socket timeout alone does not do.
"""

from __future__ import annotations

import contextlib
import errno
import json
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar
from urllib.parse import urlsplit

from engine.config import dsn_for_display, load_settings
from engine.errors import StartupError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from engine.config import Settings

T = TypeVar("T")

HEALTH_PROBE_TIMEOUT_S = 1.0  # is it an engine that holds the port?

Level = Literal["ok", "warning", "error"]


@dataclass(frozen=True, slots=True)
class Check:
    level: Level
    name: str
    text: str

    def line(self) -> str:
        return f"{self.level:<8}{self.name}: {self.text}"


def run_doctor(environ: Mapping[str, str], env_file: Path, *, timeout_s: float) -> int:
    errors = warnings = 0
    for check in doctor_checks(environ, env_file, timeout_s=timeout_s):
        print(check.line(), flush=True)  # each as it is known: a slow one shows which
        errors += check.level == "error"
        warnings += check.level == "warning"
    print(f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}")
    return 1 if errors else 0


def doctor_checks(
    environ: Mapping[str, str], env_file: Path, *, timeout_s: float
) -> Iterator[Check]:
    try:
        settings = load_settings(environ, env_file)
    except StartupError as exc:
        # Nothing else can be checked without the settings: the line says what to fix.
        yield Check("error", "configuration", str(exc))
        return
    read_from = f"{env_file} and the environment" if env_file.exists() else "the environment"
    yield Check("ok", "configuration", f"valid (read from {read_from})")
    yield _database(settings, timeout_s)
    yield _model(settings, timeout_s)
    yield _twilio(settings, timeout_s)
    yield _public_url(settings)
    yield from _ports(settings, timeout_s)


# -- database -------------------------------------------------------------------------


def _database(settings: Settings, timeout_s: float) -> Check:
    if settings.database_url is None:
        return _embedded(settings)
    # Imported here: Trio and asyncpg are a second of imports the other checks never need.
    from actors.store.probe import probe_database

    dsn = settings.database_url
    shown = dsn_for_display(dsn)
    try:
        probe = _bounded(lambda: probe_database(dsn, timeout_s=timeout_s), timeout_s + 2.0)
    except _NoAnswer:
        return Check(
            "error",
            "database",
            f"no answer from {shown} within {timeout_s:g} s: "
            "is the server up and DATABASE_URL's host and port right?",
        )
    except StartupError as exc:
        return Check("error", "database", _without_password(str(exc), dsn))
    except Exception as exc:  # noqa: BLE001 - any failure of the probe is the finding
        reason = _without_password(str(exc) or type(exc).__name__, dsn)
        return Check("error", "database", f"{shown}: {reason} (check DATABASE_URL)")
    pending = probe.pending_migrations
    schema = (
        "schema up to date"
        if not pending
        else f"{len(pending)} migration(s) to apply, which `afterhours serve` does at start"
    )
    if probe.unknown_migrations:
        return Check(
            "warning",
            "database",
            f"{shown}: PostgreSQL {probe.server_version}; "
            f"it has migrations this engine does not know ({probe.unknown_migrations}): "
            "a newer engine migrated it; run that version",
        )
    return Check("ok", "database", f"{shown}: PostgreSQL {probe.server_version}, {schema}")


def _embedded(settings: Settings) -> Check:
    from engine.postgres_home import find_postgres_bindir

    where = settings.data_dir / "postgres"
    # A cluster relocated out of a DATA_DIR the `postgres` user cannot reach (as root)
    # is recorded beside it (engine/embedded_postgres.py); read only, never written here.
    pointer = settings.data_dir / "postgres.location"
    # Unreadable: the start will say what is wrong with it; the binaries are checked here.
    with contextlib.suppress(OSError):
        where = Path(pointer.read_text().strip()) if pointer.is_file() else where
    try:
        bindir = find_postgres_bindir()
    except StartupError as exc:
        return Check(
            "error",
            "database",
            f"no DATABASE_URL, so the embedded PostgreSQL would be used, but {exc}",
        )
    return Check(
        "ok",
        "database",
        f"no DATABASE_URL: the embedded PostgreSQL will be used "
        f"(binaries in {bindir}, data in {where})",
    )


def _without_password(text: str, dsn: str) -> str:
    """``text`` with DATABASE_URL's password masked, wherever a driver put it."""
    password = urlsplit(dsn).password
    text = text.replace(dsn, dsn_for_display(dsn))
    return text.replace(password, "***") if password else text


# -- model and Twilio -----------------------------------------------------------------


def _model(settings: Settings, timeout_s: float) -> Check:
    if settings.openai_api_key is None:
        return Check(
            "ok",
            "model",
            "simulated (no OPENAI_API_KEY): calls talk to the built-in "
            "simulated model; set OPENAI_API_KEY for real calls",
        )
    url = settings.openai_realtime_url
    reached = _reach(url, timeout_s)
    if reached.error is not None:
        return Check(
            "error",
            "model",
            f"cannot reach {reached.address} (OPENAI_REALTIME_URL): "
            f"{reached.error}; check the network, a proxy or firewall on the way, "
            "and OPENAI_REALTIME_URL",
        )
    return Check(
        "ok",
        "model",
        f"{reached.address} answers ({reached.how} in "
        f"{reached.elapsed_ms} ms; the key is not tried)",
    )


def _twilio(settings: Settings, timeout_s: float) -> Check:
    sid, token, url = (
        settings.twilio_account_sid,
        settings.twilio_auth_token,
        settings.twilio_api_base_url,
    )
    if sid and not token:
        return Check(
            "error",
            "twilio",
            "TWILIO_ACCOUNT_SID is set without TWILIO_AUTH_TOKEN: "
            "set it (the Twilio console has it), or unset both for the simulators",
        )
    if sid and url:
        reached = _reach(url, timeout_s)
        if reached.error is not None:
            return Check(
                "error",
                "twilio",
                f"cannot reach Twilio's REST API at {reached.address} "
                f"(TWILIO_API_BASE_URL): {reached.error}; live calls could not be "
                "transferred to on-call numbers",
            )
        return Check(
            "ok",
            "twilio",
            f"REST API at {reached.address} answers ({reached.how} in "
            f"{reached.elapsed_ms} ms; the account is not tried)",
        )
    if settings.openai_api_key is not None:
        return Check(
            "warning",
            "twilio",
            "OPENAI_API_KEY is set but TWILIO_ACCOUNT_SID is not: "
            "real callers' live calls cannot be transferred to on-call numbers; set "
            "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
        )
    if url is None:
        return Check(
            "warning",
            "twilio",
            "simulated (no TWILIO_ACCOUNT_SID), but PORT is 0: set "
            "TWILIO_API_BASE_URL to the simulated Twilio's address",
        )
    return Check(
        "ok",
        "twilio",
        f"simulated (no TWILIO_ACCOUNT_SID): transfers go to the "
        f"simulated Twilio at {url}, which `afterhours call` and `simulate` serve",
    )


@dataclass(frozen=True, slots=True)
class _Reached:
    address: str  # host:port
    how: str  # "TCP" or "TLS handshake"
    elapsed_ms: int
    error: str | None


def _reach(url: str, timeout_s: float) -> _Reached:
    """A TCP connection to ``url``'s host and port and, for https/wss, a TLS handshake
    (the certificate checked as the engine checks it); nothing is sent after it."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme in ("https", "wss")
    port = parts.port or (443 if secure else 80)
    address = f"{host}:{port}"
    how = "TLS handshake" if secure else "TCP"
    started = time.monotonic()

    def connect() -> None:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            if secure:
                context = ssl.create_default_context()
                with context.wrap_socket(sock, server_hostname=host):
                    pass

    try:
        _bounded(connect, timeout_s)
    except _NoAnswer:
        return _Reached(address, how, 0, f"no answer within {timeout_s:g} s")
    except ssl.SSLError as exc:
        return _Reached(address, how, 0, f"TLS failed: {exc.reason or exc}")
    except OSError as exc:
        return _Reached(address, how, 0, exc.strerror or str(exc) or type(exc).__name__)
    return _Reached(address, how, round((time.monotonic() - started) * 1000), None)


# -- PUBLIC_URL and ports -------------------------------------------------------------


def _public_url(settings: Settings) -> Check:
    if settings.is_local:
        return Check(
            "warning",
            "public URL",
            f"PUBLIC_URL {settings.public_url} is this "
            "machine: Twilio cannot reach it (fine for the simulators); for real "
            "calls set PUBLIC_URL to the engine's public https URL",
        )
    return Check(
        "ok",
        "public URL",
        f"PUBLIC_URL {settings.public_url} is not local: Twilio "
        "must reach it from the internet (its console shows webhook failures)",
    )


def _ports(settings: Settings, timeout_s: float) -> Iterator[Check]:
    engine_running: bool | None = None
    for variable, port in (("PORT", settings.port), ("MEDIA_PORT", settings.media_port)):
        named = "HOST/PORT" if variable == "PORT" else "MEDIA_PORT"
        if port == 0:
            yield Check("ok", "ports", f"{variable} is 0: any free port")
            continue
        try:  # bounded too: a HOST given by name is looked up first
            problem = _bounded(partial(_bind_problem, settings.host, port), timeout_s)
        except _NoAnswer:
            problem = f"looking up HOST {settings.host!r} took over {timeout_s:g} s"
        if problem is None:
            yield Check("ok", "ports", f"{settings.host}:{port} ({named}) is free")
            continue
        if engine_running is None:
            engine_running = _engine_answers(settings.host, settings.port)
        if engine_running and problem == "in use":
            yield Check(
                "warning",
                "ports",
                f"{settings.host}:{port} ({named}) is in use by the "
                f"engine answering GET /health on port {settings.port}: a second "
                f"`afterhours serve` here would fail; stop it first, or set {variable}",
            )
        else:
            yield Check(
                "error",
                "ports",
                f"cannot listen on {settings.host}:{port} ({named}): "
                f"{problem}; free the port or set {variable}",
            )


def _bind_problem(host: str, port: int) -> str | None:
    # SO_REUSEADDR as the engine's listeners set it: a port left in TIME_WAIT is free
    # for them, and only a listening socket makes the bind fail.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return "in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
    return None


def _engine_answers(host: str, port: int) -> bool:
    if port == 0:
        return False
    url = f"http://{host}:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_PROBE_TIMEOUT_S) as response:
            body = json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return False
    return isinstance(body, dict) and "activeSessions" in body


# -- bounding ---------------------------------------------------------------------------


class _NoAnswer(Exception):
    """The check did not finish within its time."""


def _bounded(work: Callable[[], T], timeout_s: float) -> T:
    """``work()`` in a daemon thread, waited for ``timeout_s`` at most: a hung name
    lookup or connect is left behind (the process exits without it), never waited on."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="doctor-check", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise _NoAnswer
    if failure:
        raise failure[0]
    return result[0]
