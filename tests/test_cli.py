"""``afterhours serve`` as operators run it: a real process, real signals, real Postgres.

These start the engine as a subprocess, so they wait on real time; every wait is bounded
and driven by what the process prints or by its exit, never by a fixed sleep.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from actors.store.db import open_database
from engine.config import ENV_NAMES
from engine.ports import free_port
from tests.helpers import http_request

READY_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 5.0  # the bar: exit within 5 s of SIGTERM


def engine_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    env.update(settings)
    return env


def postgres_pids(data_dir: Path) -> list[int]:
    """Live processes whose working directory is the cluster (postmaster and backends)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
            if Path(os.readlink(entry / "cwd")) == data_dir and state != "Z":
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


class Engine:
    """A running ``afterhours serve`` and what it printed."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.output = ""

    async def wait_for_line(self, needle: str) -> str:
        assert self.process.stderr is not None
        with trio.fail_after(READY_TIMEOUT_S):
            while needle not in self.output:
                chunk = await self.process.stderr.receive_some(65536)
                if not chunk:
                    raise AssertionError(f"engine exited before {needle!r}:\n{self.output}")
                self.output += chunk.decode()
        return next(line for line in self.output.splitlines() if needle in line)

    async def close(self) -> None:
        """Never leave a process or a pipe behind, whatever the test did."""
        if self.process.returncode is None:
            self.process.kill()
            with trio.CancelScope(shield=True):
                await self.process.wait()
        if self.process.stderr is not None:
            await self.process.stderr.aclose()

    async def finish(self) -> int:
        """Read the rest of stderr and the exit code."""
        assert self.process.stderr is not None
        with trio.fail_after(READY_TIMEOUT_S):
            while chunk := await self.process.stderr.receive_some(65536):
                self.output += chunk.decode()
            return await self.process.wait()


@asynccontextmanager
async def closing(engine: Engine) -> AsyncIterator[Engine]:
    try:
        yield engine
    finally:
        await engine.close()


async def start(base_dir: Path, env: dict[str, str]) -> Engine:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "api.cli", "serve"],
        cwd=base_dir,
        env={**env, "PYTHONPATH": str(Path(__file__).parents[1])},
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    return Engine(process)


async def run_to_exit(base_dir: Path, env: dict[str, str]) -> tuple[int, str]:
    engine = await start(base_dir, env)
    async with closing(engine):
        code = await engine.finish()
    return code, engine.output


async def test_invalid_setting_is_one_line_and_exit_2(base_dir: Path) -> None:
    code, output = await run_to_exit(base_dir, engine_env(PORT="eighty"))
    assert code == 2
    assert output.splitlines() == [
        "afterhours: invalid PORT='eighty': expected an integer from 0 to 65535"
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
@pytest.mark.parametrize(
    "tokens",
    [
        pytest.param({}, id="tokens-generated"),
        # With both tokens set nothing is written to DATA_DIR, and it is still checked.
        pytest.param({"ADMIN_TOKEN": "a" * 32, "TWILIO_AUTH_TOKEN": "b" * 32}, id="tokens-set"),
    ],
)
async def test_data_dir_owned_by_someone_else_is_refused(
    base_dir: Path, tokens: dict[str, str]
) -> None:
    foreign = base_dir / "foreign"
    foreign.mkdir()
    os.chown(foreign, 65534, 65534)
    code, output = await run_to_exit(base_dir, engine_env(DATA_DIR=str(foreign), **tokens))
    assert code == 2
    assert len(output.splitlines()) == 1
    assert f"DATA_DIR={foreign} is owned by uid 65534" in output


async def test_sigterm_during_embedded_start_up_exits_cleanly(base_dir: Path) -> None:
    port = free_port()
    cluster = base_dir / ".afterhours" / "postgres"
    engine = await start(base_dir, engine_env(PORT=str(port)))
    async with closing(engine):
        # A first run spends about a second in initdb: stop it right there.
        await engine.wait_for_line("initialising a new PostgreSQL cluster")
        engine.process.send_signal(signal.SIGTERM)
        with trio.fail_after(EXIT_TIMEOUT_S):
            code = await engine.finish()
    assert code == 0, engine.output
    assert "Traceback" not in engine.output
    assert postgres_pids(cluster) == []
    # The interrupted first run left nothing that stops the next one.
    engine = await start(base_dir, engine_env(PORT=str(port)))
    async with closing(engine):
        await engine.wait_for_line("ready:")
        engine.process.send_signal(signal.SIGTERM)
        with trio.fail_after(EXIT_TIMEOUT_S):
            assert await engine.finish() == 0
    assert postgres_pids(cluster) == []


async def test_unreachable_database_is_one_clear_line(base_dir: Path) -> None:
    env = engine_env(DATABASE_URL="postgresql://afterhours:pw-s3cret@127.0.0.1:1/afterhours")
    code, output = await run_to_exit(base_dir, env)
    assert code == 1
    assert "Traceback" not in output
    assert "cannot start: store failed to start: cannot reach the database at " in output
    assert "postgresql://afterhours:***@127.0.0.1:1/afterhours" in output
    assert "pw-s3cret" not in output


async def test_log_level_warning_drops_the_info_lines_and_keeps_the_failure(
    base_dir: Path,
) -> None:
    env = engine_env(
        DATABASE_URL="postgresql://afterhours:pw@127.0.0.1:1/afterhours", LOG_LEVEL="warning"
    )
    code, output = await run_to_exit(base_dir, env)
    assert code == 1
    assert " INFO " not in output  # "afterhours ... starting" and the rest are not written
    assert "CRITICAL afterhours: cannot start: store failed to start" in output


async def test_port_in_use_is_one_clear_line_and_nothing_left_running(base_dir: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        code, output = await run_to_exit(base_dir, engine_env(PORT=str(port)))
    assert code == 1
    assert "Traceback" not in output
    assert f"cannot listen on 127.0.0.1:{port} (HOST/PORT): Address already in use" in output
    # The embedded PostgreSQL had started (and migrated) before the API failed to bind:
    # it was stopped on the way out.
    assert "applied migrations" in output
    assert postgres_pids(base_dir / ".afterhours" / "postgres") == []


@pytest.mark.parametrize("variable", ["PORT", "MEDIA_PORT"])
async def test_a_port_clash_fails_the_start_in_one_line_and_alerts_nobody(
    base_dir: Path, fresh_database: str, variable: str
) -> None:
    """A listener that cannot bind at start is a start failure: one error line naming the
    port and its variable, exit 1, and no actorCrashed alert (no event_log row: the
    row is what every alert channel is sent alongside)."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = {"PORT": str(free_port()), "MEDIA_PORT": str(free_port())} | {variable: str(taken)}
        env = engine_env(DATABASE_URL=fresh_database, **ports)
        code, output = await run_to_exit(base_dir, env)
    assert code == 1
    child = "api" if variable == "PORT" else "media"
    named = "HOST/PORT" if variable == "PORT" else "MEDIA_PORT"
    errors = [line for line in output.splitlines() if " ERROR " in line or " CRITICAL " in line]
    assert len(errors) == 1, output
    assert errors[0].endswith(
        f" CRITICAL afterhours: cannot start: {child} failed to start: cannot listen on "
        f"127.0.0.1:{taken} ({named}): Address already in use"
    )
    assert "actorCrashed" not in output
    async with open_database(fresh_database, connect_timeout_s=5) as db:
        alerts = await db.fetch("SELECT type, message FROM event_log", timeout_s=5)
    assert [row["type"] for row in alerts if row["type"] == "actorCrashed"] == []


async def test_embedded_engine_serves_stops_on_sigterm_and_recovers_from_a_kill(
    base_dir: Path,
) -> None:
    port = free_port()
    env = engine_env(PORT=str(port))
    cluster = base_dir / ".afterhours" / "postgres"

    # 1. First run: embedded PostgreSQL initialised, /health answers, SIGTERM exits 0 fast.
    engine = await start(base_dir, env)
    async with closing(engine):
        await engine.wait_for_line("ready:")
        health = await http_request("GET", f"http://127.0.0.1:{port}/health")
        assert health.status == 200
        engine.process.send_signal(signal.SIGTERM)
        with trio.fail_after(EXIT_TIMEOUT_S):
            code = await engine.finish()
    assert code == 0, engine.output
    assert postgres_pids(cluster) == []
    for token in ("admin_token", "twilio_auth_token"):
        assert (base_dir / ".afterhours" / token).stat().st_mode & 0o777 == 0o600
        assert f"stored in {base_dir / '.afterhours' / token}" in engine.output
    assert (base_dir / ".afterhours" / "admin_token").read_text() not in engine.output

    # 2. A SIGKILLed engine leaves its PostgreSQL behind as an orphan...
    engine = await start(base_dir, env)
    async with closing(engine):
        await engine.wait_for_line("ready:")
        engine.process.kill()
        await engine.process.wait()
    orphans = postgres_pids(cluster)
    assert orphans

    # 3. ...which the next start finds and replaces, and SIGTERM again leaves nothing.
    engine = await start(base_dir, env)
    async with closing(engine):
        await engine.wait_for_line("ready:")
        assert not set(orphans) & set(postgres_pids(cluster))
        assert (await http_request("GET", f"http://127.0.0.1:{port}/health")).status == 200
        engine.process.send_signal(signal.SIGINT)
        with trio.fail_after(EXIT_TIMEOUT_S):
            code = await engine.finish()
    assert code == 0, engine.output
    assert "orphan" in engine.output
    assert postgres_pids(cluster) == []


def test_bench_runs_a_benchmark_from_the_source_tree() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "bench", "calls", "--help"],
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "How many calls a core carries" in done.stdout
    assert "--levels" in done.stdout


async def test_workers_share_the_ports_and_the_database_and_stop_together(
    base_dir: Path,
) -> None:
    port, media_port = free_port(), free_port()
    env = engine_env(PORT=str(port), MEDIA_PORT=str(media_port), WORKERS="2")
    cluster = base_dir / ".afterhours" / "postgres"
    engine = await start(base_dir, env)
    async with closing(engine):
        for _ in range(2):  # each worker says it is ready
            await engine.wait_for_line("ready:")
            engine.output = engine.output.replace("ready:", "seen:", 1)
        token = (base_dir / ".afterhours" / "admin_token").read_text().strip()
        # Each worker also answers on its own port, and its metrics say which it is.
        infos = []
        for index in range(2):
            own = f"http://127.0.0.1:{port + 100 + index}"
            metrics = await http_request("GET", f"{own}/metrics", token=token)
            infos.append(
                next(
                    line
                    for line in metrics.body.decode().splitlines()
                    if line.startswith("afterhours_engine_info{")
                )
            )
        shared = await http_request("GET", f"http://127.0.0.1:{port}/health")
        # One project created through any worker is seen by both (one database).
        project = {"id": "acme", "name": "Acme", "timezone": "UTC"}
        created = await http_request(
            "POST", f"http://127.0.0.1:{port + 100}/admin/projects", json=project, token=token
        )
        seen = await http_request(
            "GET", f"http://127.0.0.1:{port + 101}/admin/projects/acme", token=token
        )
        engine.process.send_signal(signal.SIGTERM)
        with trio.fail_after(EXIT_TIMEOUT_S):
            code = await engine.finish()
    assert code == 0, engine.output
    assert shared.status == 200
    assert 'worker="0"' in infos[0]
    assert 'worker="1"' in infos[1]
    assert infos[0].split('pid="')[1] != infos[1].split('pid="')[1]
    assert (created.status, seen.status) == (201, 200)
    assert postgres_pids(cluster) == []  # the parent's PostgreSQL stopped after the workers
    assert "worker 0 stopped (exit 0)" in engine.output
    assert "worker 1 stopped (exit 0)" in engine.output


def test_the_cli_script_names_are_the_simulated_callers() -> None:
    from api.cli.simulate_args import CALLER_SCRIPT_NAMES
    from engine.simulator.caller import CALLER_SCRIPTS

    assert sorted(CALLER_SCRIPT_NAMES) == sorted(CALLER_SCRIPTS)
