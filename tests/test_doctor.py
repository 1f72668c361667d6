"""``afterhours doctor`` as an operator runs it: a real process, against the real
PostgreSQL of the suite, closed and busy ports on 127.0.0.1. No check here needs the
internet: a "reachable" model is a local TCP listener (ws://), an unreachable one a closed
port. Also ``afterhours --help``: what the program is, without importing the engine."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import trio

from actors.store.db import open_database
from engine.config import ENV_NAMES
from engine.ports import free_port
from tests.helpers import running_engine

ROOT = Path(__file__).parents[1]
DOCTOR_TIMEOUT_S = 30.0
DB_PASSWORD = "pw-s3cret-doctor"  # trust auth ignores it: it must still never be printed
API_KEY = "sk-test-doctor-key-123"


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    return free_port()


async def doctor(cwd: Path, **settings: str) -> tuple[int, list[str], str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    # Free ports by default: the machine's 8080/8081 may be anyone's.
    env |= {"PORT": str(free_port()), "MEDIA_PORT": str(free_port()), "PYTHONPATH": str(ROOT)}
    env |= {"DATA_DIR": str(cwd / "data")} | settings
    with trio.fail_after(DOCTOR_TIMEOUT_S):
        done = await trio.run_process(
            [sys.executable, "-m", "api.cli", "doctor", "--timeout-s", "2"],
            env=env,
            cwd=cwd,
            check=False,
            capture_stdout=True,
            capture_stderr=True,
            stdin=subprocess.DEVNULL,
        )
    return done.returncode, done.stdout.decode().splitlines(), done.stderr.decode()


def line(lines: list[str], name: str) -> str:
    (found,) = [entry for entry in lines if entry.split(maxsplit=1)[1].startswith(f"{name}:")]
    return found


def with_password(dsn: str) -> tuple[str, str]:
    """The DSN with a password in it, and that password (which must never be printed):
    the server's own when it has one (the embedded server checks it), else DB_PASSWORD
    (trust auth ignores it)."""
    parts = urlsplit(dsn)
    if parts.password:
        return dsn, parts.password
    user = parts.username or "postgres"
    netloc = f"{user}:{DB_PASSWORD}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc)), DB_PASSWORD


async def test_a_sound_local_configuration_is_ok_with_one_warning(
    fresh_database: str, tmp_path: Path
) -> None:
    dsn, password = with_password(fresh_database)
    code, lines, err = await doctor(tmp_path, DATABASE_URL=dsn)
    assert code == 0, (lines, err)
    assert err == ""
    assert (
        line(lines, "configuration") == "ok      configuration: valid (read from the environment)"
    )
    database = line(lines, "database")
    assert database.startswith(f"ok      database: postgresql://{urlsplit(dsn).username}:***@")
    assert "PostgreSQL 15" in database
    # A fresh database: serve would apply every migration.
    assert "migration(s) to apply, which `afterhours serve` does at start" in database
    assert line(lines, "model").startswith("ok      model: simulated (no OPENAI_API_KEY)")
    assert line(lines, "twilio").startswith("ok      twilio: simulated (no TWILIO_ACCOUNT_SID)")
    assert line(lines, "public URL").startswith("warning public URL: PUBLIC_URL http://127.0.0.1:")
    assert "Twilio cannot reach it" in line(lines, "public URL")
    ports = [entry for entry in lines if entry.split()[1] == "ports:"]
    assert [entry.split()[0] for entry in ports] == ["ok", "ok"]
    assert lines[-1] == "0 errors, 1 warning"
    assert password not in "\n".join(lines)


async def test_an_unreachable_database_is_an_error_line_and_exit_1(tmp_path: Path) -> None:
    port = closed_port()
    dsn = f"postgresql://afterhours:{DB_PASSWORD}@127.0.0.1:{port}/afterhours"
    code, lines, err = await doctor(tmp_path, DATABASE_URL=dsn)
    assert code == 1
    assert err == ""
    database = line(lines, "database")
    assert database.startswith(
        f"error   database: cannot reach the database at "
        f"postgresql://afterhours:***@127.0.0.1:{port}/afterhours: "
    )
    assert "check DATABASE_URL" in database
    assert DB_PASSWORD not in "\n".join(lines)
    # The other checks still ran: one run shows everything to fix.
    assert line(lines, "model").startswith("ok ")
    assert lines[-1] == "1 error, 1 warning"


async def test_an_unreachable_model_is_an_error_line_and_the_key_is_never_shown(
    fresh_database: str, tmp_path: Path
) -> None:
    port = closed_port()
    code, lines, _ = await doctor(
        tmp_path,
        DATABASE_URL=fresh_database,
        OPENAI_API_KEY=API_KEY,
        OPENAI_REALTIME_URL=f"wss://127.0.0.1:{port}/v1/realtime",
    )
    assert code == 1
    assert line(lines, "model") == (
        f"error   model: cannot reach 127.0.0.1:{port} (OPENAI_REALTIME_URL): Connection "
        "refused; check the network, a proxy or firewall on the way, and OPENAI_REALTIME_URL"
    )
    # A real model without a Twilio account: the engine starts, but cannot transfer.
    assert line(lines, "twilio").startswith("warning twilio: OPENAI_API_KEY is set but")
    assert API_KEY not in "\n".join(lines)


async def test_a_listening_model_endpoint_and_an_unreachable_twilio(
    fresh_database: str, tmp_path: Path
) -> None:
    """The model's host answers TCP (ws://: no TLS to check); Twilio's REST API is a
    closed port (https://: the TLS handshake never starts)."""
    twilio_port = closed_port()
    with socket.socket() as model:
        model.bind(("127.0.0.1", 0))
        model.listen()
        model_port = model.getsockname()[1]
        code, lines, _ = await doctor(
            tmp_path,
            DATABASE_URL=fresh_database,
            OPENAI_API_KEY=API_KEY,
            OPENAI_REALTIME_URL=f"ws://127.0.0.1:{model_port}/v1/realtime",
            TWILIO_ACCOUNT_SID="AC" + "0" * 32,
            TWILIO_AUTH_TOKEN="twilio-token-doctor",
            TWILIO_API_BASE_URL=f"https://127.0.0.1:{twilio_port}",
        )
    assert code == 1
    assert line(lines, "model").startswith(
        f"ok      model: 127.0.0.1:{model_port} answers (TCP in "
    )
    assert line(lines, "twilio").startswith(
        f"error   twilio: cannot reach Twilio's REST API at 127.0.0.1:{twilio_port} "
        "(TWILIO_API_BASE_URL): Connection refused"
    )
    assert "twilio-token-doctor" not in "\n".join(lines)


async def test_a_configuration_error_is_its_one_line_and_exit_1(tmp_path: Path) -> None:
    code, lines, err = await doctor(tmp_path, PORT="eighty")
    assert (code, err) == (1, "")
    assert lines == [
        "error   configuration: invalid PORT='eighty': expected an integer from 0 to 65535",
        "1 error, 0 warnings",
    ]


async def test_a_port_in_use_is_an_error_naming_its_variable(
    fresh_database: str, tmp_path: Path
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        code, lines, _ = await doctor(tmp_path, DATABASE_URL=fresh_database, MEDIA_PORT=str(taken))
    assert code == 1
    ports = [entry for entry in lines if entry.split()[1] == "ports:"]
    assert ports[1] == (
        f"error   ports: cannot listen on 127.0.0.1:{taken} (MEDIA_PORT): in use; free the "
        "port or set MEDIA_PORT"
    )


async def test_ports_held_by_a_running_engine_are_a_warning_not_an_error(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path, MEDIA_PORT=str(free_port())) as engine:
        port = engine.bound_urls[0].rsplit(":", 1)[1]
        media_port = str(engine.media.bound_port)
        code, lines, _ = await doctor(
            tmp_path, DATABASE_URL=fresh_database, PORT=port, MEDIA_PORT=media_port
        )
    ports = [entry for entry in lines if entry.split()[1] == "ports:"]
    assert ports[0] == (
        f"warning ports: 127.0.0.1:{port} (HOST/PORT) is in use by the engine answering GET "
        f"/health on port {port}: a second `afterhours serve` here would fail; stop it first, "
        "or set PORT"
    )
    assert ports[1].startswith(f"warning ports: 127.0.0.1:{media_port} (MEDIA_PORT) is in use")
    # The engine migrated its database: nothing pending.
    assert line(lines, "database").endswith(", schema up to date")
    assert code == 0


async def test_a_database_migrated_by_a_newer_engine_is_a_warning(
    fresh_database: str, tmp_path: Path
) -> None:
    async with open_database(fresh_database, connect_timeout_s=5) as db:
        await db.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
            timeout_s=5,
        )
        await db.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'x', 'x')",
            timeout_s=5,
        )
    code, lines, _ = await doctor(tmp_path, DATABASE_URL=fresh_database)
    database = line(lines, "database")
    # The DSN as given, its password (the embedded test server has one) hidden.
    parts = urlsplit(fresh_database)
    shown = f"{parts.username}:***@" if parts.password else f"{parts.username}@"
    assert database.startswith(f"warning database: postgresql://{shown}")
    assert "it has migrations this engine does not know ([9999])" in database
    assert code == 0


async def test_twilio_settings_that_cannot_transfer_are_said(tmp_path: Path) -> None:
    no_token = await doctor(tmp_path, TWILIO_ACCOUNT_SID="AC" + "0" * 32)
    any_port = await doctor(tmp_path, PORT="0", MEDIA_PORT="0")
    assert no_token[0] == 1
    assert line(no_token[1], "twilio").startswith(
        "error   twilio: TWILIO_ACCOUNT_SID is set without TWILIO_AUTH_TOKEN"
    )
    assert line(any_port[1], "twilio").startswith(
        "warning twilio: simulated (no TWILIO_ACCOUNT_SID), but PORT is 0"
    )
    assert [entry for entry in any_port[1] if entry.split()[1] == "ports:"] == [
        "ok      ports: PORT is 0: any free port",
        "ok      ports: MEDIA_PORT is 0: any free port",
    ]


async def test_without_database_url_the_embedded_postgresql_is_named(tmp_path: Path) -> None:
    code, lines, _ = await doctor(tmp_path)
    database = line(lines, "database")
    # This machine has the server binaries (the suite's embedded tests need them).
    assert database.startswith(
        "ok      database: no DATABASE_URL: the embedded PostgreSQL will be used (binaries in "
    )
    assert f"data in {tmp_path / 'data' / 'postgres'}" in database
    assert code == 0
    # A cluster the engine relocated (as root, DATA_DIR unreachable by `postgres`) is
    # where its pointer says.
    relocated = "/var/lib/afterhours-postgres/0123456789abcdef/postgres"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "postgres.location").write_text(relocated + "\n")
    _, lines, _ = await doctor(tmp_path)
    assert line(lines, "database").endswith(f"data in {relocated})")


async def test_help_says_what_the_program_is_without_importing_the_engine() -> None:
    probe = (
        "import sys\n"
        "from api.cli.main import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        # urllib.request and msgspec too: with them --help took 0.3 s instead of 0.13 s
        "heavy = ('trio', 'httpx', 'openai', 'asyncpg', 'hypercorn', 'api.cli.doctor',\n"
        "         'urllib.request', 'msgspec', 'engine.logs')\n"
        "print('imported:', [name for name in heavy if name in sys.modules])\n"
    )
    with trio.fail_after(DOCTOR_TIMEOUT_S):
        done = await trio.run_process(
            [sys.executable, "-c", probe],
            cwd=ROOT,
            check=False,
            capture_stdout=True,
            capture_stderr=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        )
    shown = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    description = shown.split("\n\n")[1]
    assert description.startswith(
        "afterhours answers a trade business's phone line after hours (plumbers, HVAC, "
        "electricians): Twilio streams the call to this engine"
    )
    assert "doctor" in shown.split("\n\n")[2]  # the command is listed
    assert shown.splitlines()[-1] == "imported: []"
