"""engine.embedded_postgres against the machine's real PostgreSQL binaries.

Every test runs real processes. The clusters live in a directory made with ``mkdtemp``
under /tmp and opened to 0755: pytest's own tmp_path sits under a 0700 directory the
``postgres`` user cannot traverse.
"""

from __future__ import annotations

import os
import pwd
import socket
import stat
import subprocess
from pathlib import Path

import pytest
import trio

from engine.embedded_postgres import find_postgres_bindir, open_embedded_postgres
from engine.errors import StartupError

TEST_TIMEOUT_S = 60.0
PSQL_TIMEOUT_S = 15.0
IS_ROOT = os.geteuid() == 0


@pytest.fixture
def bindir() -> Path:
    return find_postgres_bindir()


def _alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] != "Z"


def _pids_in(data_dir: Path) -> set[int]:
    """Live processes working in ``data_dir``: the postmaster and every backend chdir there."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = (entry / "cwd").readlink()
        except OSError:  # gone meanwhile, a zombie, or a kernel thread
            continue
        if cwd == data_dir and _alive(int(entry.name)):
            found.add(int(entry.name))
    return found


async def _psql(bindir: Path, dsn: str, sql: str, extra: list[str] | None = None) -> str:
    with trio.fail_after(PSQL_TIMEOUT_S):
        argv = [str(bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-tA", *(extra or [])]
        result = await trio.run_process(
            [*argv, "-d", dsn],
            stdin=sql.encode(),
            capture_stdout=True,
            capture_stderr=True,
        )
    return result.stdout.decode().strip()


async def test_cold_start_connects_and_stops(base_dir: Path, bindir: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        data_dir = base_dir / "postgres"
        async with open_embedded_postgres(data_dir) as pg:
            assert (data_dir / "PG_VERSION").exists()
            password = (base_dir / "postgres.password").read_text()
            assert pg.dsn == f"postgresql://afterhours:{password}@127.0.0.1:{pg.port}/afterhours"
            assert pg.data_dir == data_dir
            assert _alive(pg.pid)
            assert await _psql(bindir, pg.dsn, "select current_database(), 1") == "afterhours|1"
            assert pg.pid in _pids_in(data_dir)
            # Loopback is no excuse for trust: without the password, no connection.
            anonymous = pg.dsn.replace(f":{password}@", "@")
            with pytest.raises(subprocess.CalledProcessError) as refused:
                await _psql(bindir, anonymous, "select 1", extra=["-w"])
            assert b"password authentication failed" in refused.value.stderr or (
                b"no password supplied" in refused.value.stderr
            )
        assert not _alive(pg.pid)
        assert _pids_in(data_dir) == set()


async def test_warm_start_keeps_data(base_dir: Path, bindir: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        data_dir = base_dir / "postgres"
        async with open_embedded_postgres(data_dir) as first:
            await _psql(
                bindir, first.dsn, "create table kept (v text); insert into kept values ('x')"
            )
        version_file = (data_dir / "PG_VERSION").stat()
        async with open_embedded_postgres(data_dir) as second:
            assert second.pid != first.pid
            assert await _psql(bindir, second.dsn, "select v from kept") == "x"
        # no initdb the second time: the cluster's files were not recreated
        assert (data_dir / "PG_VERSION").stat().st_mtime_ns == version_file.st_mtime_ns
        assert _pids_in(data_dir) == set()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _spawn_orphan(bindir: Path, data_dir: Path) -> trio.Process:
    """A postmaster on ``data_dir`` as a SIGKILLed engine would leave it, ready to serve."""
    who = pwd.getpwnam("postgres") if IS_ROOT else None
    orphan = await trio.lowlevel.open_process(
        [
            *(str(bindir / "postgres"), "-D", str(data_dir), "-p", str(_free_port())),
            *("-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=data_dir,
        start_new_session=True,
        user=None if who is None else who.pw_uid,
        group=None if who is None else who.pw_gid,
        extra_groups=None if who is None else [],
    )
    pid_file = data_dir / "postmaster.pid"
    while not (pid_file.exists() and "ready" in pid_file.read_text()):
        assert orphan.poll() is None, "the orphan postmaster failed to start"
        await trio.sleep(0.02)
    return orphan


async def test_orphan_postmaster_is_replaced(
    base_dir: Path, bindir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        data_dir = base_dir / "postgres"
        async with open_embedded_postgres(data_dir):
            pass
        orphan = await _spawn_orphan(bindir, data_dir)
        try:
            async with open_embedded_postgres(data_dir) as pg:
                await orphan.wait()
                assert pg.pid != orphan.pid
                assert f"orphaned PostgreSQL (pid {orphan.pid})" in caplog.text
                assert await _psql(bindir, pg.dsn, "select 1") == "1"
            assert not _alive(orphan.pid)
            assert not _alive(pg.pid)
            assert _pids_in(data_dir) == set()
        finally:
            if orphan.returncode is None:
                orphan.kill()
                await orphan.wait()


async def test_missing_binaries(base_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(base_dir))
    with pytest.raises(StartupError) as caught:
        find_postgres_bindir([])
    assert str(caught.value) == (
        "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin and PATH): "
        "install them with `apt-get install postgresql`, or set DATABASE_URL to an existing "
        "server"
    )


async def test_binaries_found_on_path(base_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = base_dir / "bin"
    fake.mkdir()
    for name in ("postgres", "initdb", "pg_ctl", "pg_isready"):
        (fake / name).write_text("#!/bin/sh\n")
        (fake / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{base_dir}{os.pathsep}{fake}")
    assert find_postgres_bindir([base_dir / "missing"]) == fake


@pytest.mark.skipif(not IS_ROOT, reason="only root runs Postgres as another user")
async def test_untraversable_parent_is_named(base_dir: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        locked = base_dir / "locked"
        locked.mkdir(mode=0o700)
        locked.chmod(0o700)
        with pytest.raises(StartupError, match="cannot reach") as caught:
            async with open_embedded_postgres(locked / "postgres"):
                pytest.fail("must not start")
        message = str(caught.value)
        assert f"{locked} is not searchable" in message
        assert f"chmod o+x {locked}" in message
        assert "DATABASE_URL" in message
        assert stat.S_IMODE(locked.stat().st_mode) == 0o700  # never chmodded for us


async def test_cancellation_in_body_stops_postgres(base_dir: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        data_dir = base_dir / "postgres"
        with trio.CancelScope() as scope:
            async with open_embedded_postgres(data_dir) as pg:
                scope.cancel()
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert not _alive(pg.pid)
        assert _pids_in(data_dir) == set()


async def test_child_exiting_during_startup_reports_log(base_dir: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        data_dir = base_dir / "postgres"
        async with open_embedded_postgres(data_dir):
            pass
        with (data_dir / "postgresql.conf").open("a") as conf:
            conf.write("shared_buffers = 'not a size'\n")
        with pytest.raises(StartupError, match="exited during start-up") as caught:
            async with open_embedded_postgres(data_dir):
                pytest.fail("must not start")
        assert "shared_buffers" in str(caught.value)
        assert str(data_dir / "server.log") in str(caught.value)
        assert _pids_in(data_dir) == set()


async def test_second_engine_on_the_same_data_dir_is_refused(base_dir: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        data_dir = base_dir / "postgres"
        async with open_embedded_postgres(data_dir) as first:
            with pytest.raises(
                StartupError, match=rf"in use by another afterhours engine \(pid {os.getpid()}\)"
            ):
                async with open_embedded_postgres(data_dir):
                    pass
            # The running server was not mistaken for an orphan.
            assert _alive(first.pid)
        assert not _alive(first.pid)


async def test_interrupted_initdb_is_started_afresh(base_dir: Path, bindir: Path) -> None:
    data_dir = base_dir / "postgres"
    staging = base_dir / "postgres.initdb"
    staging.mkdir()
    (staging / "PG_VERSION").write_text("15\n")  # half of a cluster, as a kill leaves it
    with trio.fail_after(TEST_TIMEOUT_S):
        async with open_embedded_postgres(data_dir) as pg:
            assert await _psql(bindir, pg.dsn, "select 1") == "1"
    assert not staging.exists()


async def test_foreign_content_in_the_cluster_dir_is_not_overwritten(base_dir: Path) -> None:
    data_dir = base_dir / "postgres"
    data_dir.mkdir()
    (data_dir / "notes.txt").write_text("not a cluster")
    with trio.fail_after(TEST_TIMEOUT_S), pytest.raises(StartupError, match="neither empty nor"):
        async with open_embedded_postgres(data_dir):
            pass
    assert (data_dir / "notes.txt").read_text() == "not a cluster"
