"""engine.embedded_postgres against the machine's real PostgreSQL binaries.

Every test runs real processes. The clusters live in a directory made with ``mkdtemp``
under /tmp and opened to 0755: pytest's own tmp_path sits under a 0700 directory the
``postgres`` user cannot traverse.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import trio

from engine.embedded_postgres import open_embedded_postgres
from engine.errors import StartupError
from engine.ports import free_port
from engine.postgres_home import find_postgres_bindir

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
            # JIT stays off: under the unit's MemoryDenyWriteExecute it fails the query.
            assert await _psql(bindir, pg.dsn, "show jit") == "off"
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


async def _spawn_orphan(bindir: Path, data_dir: Path) -> trio.Process:
    """A postmaster on ``data_dir`` as a SIGKILLed engine would leave it, ready to serve."""
    who = pwd.getpwnam("postgres") if IS_ROOT else None
    orphan = await trio.lowlevel.open_process(
        [
            *(str(bindir / "postgres"), "-D", str(data_dir), "-p", str(free_port())),
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
async def test_untraversable_parent_is_named_when_no_place_is_reachable(base_dir: Path) -> None:
    """The clear message stays where no relocated cluster can be made either."""
    with trio.fail_after(TEST_TIMEOUT_S):
        locked = base_dir / "locked"
        locked.mkdir(mode=0o700)
        locked.chmod(0o700)
        unreachable_root = base_dir / "locked-too"
        unreachable_root.mkdir(mode=0o700)
        unreachable_root.chmod(0o700)
        for relocation_root in (unreachable_root / "relocated", None):
            with pytest.raises(StartupError, match="cannot reach") as caught:
                async with open_embedded_postgres(
                    locked / "postgres", relocation_root=relocation_root
                ):
                    pytest.fail("must not start")
            message = str(caught.value)
            assert f"{locked} is not searchable" in message
            assert f"chmod o+x {locked}" in message
            assert "DATABASE_URL" in message
            if relocation_root is not None:
                assert f"no cluster can live in {relocation_root}" in message
                assert f"{unreachable_root} is not searchable by it either" in message
            assert not (locked / "postgres.location").exists()
        assert stat.S_IMODE(locked.stat().st_mode) == 0o700  # never chmodded for us
        assert stat.S_IMODE(unreachable_root.stat().st_mode) == 0o700


def _private_data_dir(base_dir: Path, name: str) -> Path:
    """``<base>/home/<name>/.afterhours/postgres`` with ``home`` mode 0700, as /root is on
    a fresh server; DATA_DIR itself created as the engine's local_secrets leaves it."""
    home = base_dir / "home"
    home.mkdir(mode=0o700, exist_ok=True)
    home.chmod(0o700)
    data_dir = home / name / ".afterhours"
    data_dir.mkdir(mode=0o711, parents=True)
    return data_dir / "postgres"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(not IS_ROOT, reason="only root runs Postgres as another user")
async def test_unreachable_data_dir_gets_its_own_persistent_relocated_cluster(
    base_dir: Path, bindir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="afterhours.postgres")
    relocation_root = base_dir / "var-lib"
    requested = _private_data_dir(base_dir, "x")
    postgres_uid = pwd.getpwnam("postgres").pw_uid
    with trio.fail_after(TEST_TIMEOUT_S):
        async with open_embedded_postgres(requested, relocation_root=relocation_root) as pg:
            cluster = pg.data_dir
            await _psql(bindir, pg.dsn, "create table kept (v text); insert into kept values ('x')")
        assert cluster.parent.parent == relocation_root
        assert re.fullmatch("[0-9a-f]{16}", cluster.parent.name)
        assert (cluster / "PG_VERSION").exists()
        pointer = requested.with_name("postgres.location")
        assert pointer.read_text() == f"{cluster}\n"
        assert (cluster.parent / "requested-by").read_text() == f"{requested}\n"
        # Nothing of it is world-readable; only the cluster itself belongs to `postgres`.
        assert (cluster.stat().st_uid, _mode(cluster)) == (postgres_uid, 0o700)
        for directory in (relocation_root, cluster.parent):
            assert (directory.stat().st_uid, _mode(directory)) == (0, 0o711)
        assert _mode(cluster.with_name("postgres.password")) == 0o600
        assert _mode(pointer) == 0o600
        # The home was left as it was, and no cluster was started in it.
        assert _mode(base_dir / "home") == 0o700
        assert not requested.exists()
        start_line = (
            f"the embedded PostgreSQL cluster for {requested} lives in {cluster} "
            f"({base_dir / 'home'} is not searchable by the `postgres` user; see {pointer})"
        )
        assert start_line in caplog.text
        caplog.clear()
        assert _pids_in(cluster) == set()

        version_file = (cluster / "PG_VERSION").stat()
        async with open_embedded_postgres(requested, relocation_root=relocation_root) as again:
            assert again.data_dir == cluster
            assert start_line in caplog.text  # every start says where the data is
            assert await _psql(bindir, again.dsn, "select v from kept") == "x"
        assert (cluster / "PG_VERSION").stat().st_mtime_ns == version_file.st_mtime_ns

        other = _private_data_dir(base_dir, "y")
        async with open_embedded_postgres(other, relocation_root=relocation_root) as elsewhere:
            assert elsewhere.data_dir.parent.parent == relocation_root
            assert elsewhere.data_dir != cluster
            assert await _psql(bindir, elsewhere.dsn, "select to_regclass('kept')") == ""
        assert _pids_in(cluster) == set()
        assert _pids_in(elsewhere.data_dir) == set()


@pytest.mark.skipif(not IS_ROOT, reason="only root runs Postgres as another user")
async def test_relocated_cluster_keeps_the_lock_and_orphan_handling(
    base_dir: Path, bindir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    relocation_root = base_dir / "var-lib"
    requested = _private_data_dir(base_dir, "x")
    with trio.fail_after(TEST_TIMEOUT_S):
        async with open_embedded_postgres(requested, relocation_root=relocation_root) as first:
            with pytest.raises(StartupError, match="in use by another afterhours engine"):
                async with open_embedded_postgres(requested, relocation_root=relocation_root):
                    pass
            assert _alive(first.pid)
        orphan = await _spawn_orphan(bindir, first.data_dir)
        try:
            async with open_embedded_postgres(requested, relocation_root=relocation_root) as pg:
                await orphan.wait()
                assert pg.data_dir == first.data_dir
                assert f"orphaned PostgreSQL (pid {orphan.pid})" in caplog.text
                assert await _psql(bindir, pg.dsn, "select 1") == "1"
            assert _pids_in(pg.data_dir) == set()
        finally:
            if orphan.returncode is None:
                orphan.kill()
                await orphan.wait()


@pytest.mark.skipif(not IS_ROOT, reason="only root runs Postgres as another user")
async def test_a_copied_pointer_never_shares_a_cluster(base_dir: Path) -> None:
    relocation_root = base_dir / "var-lib"
    original = _private_data_dir(base_dir, "x")
    copy = _private_data_dir(base_dir, "y")
    with trio.fail_after(TEST_TIMEOUT_S):
        async with open_embedded_postgres(original, relocation_root=relocation_root) as pg:
            pass
        pointer = copy.with_name("postgres.location")
        shutil.copy(original.with_name("postgres.location"), pointer)
        with pytest.raises(StartupError, match=f"belongs to {original}, not to {copy}") as caught:
            async with open_embedded_postgres(copy, relocation_root=relocation_root):
                pytest.fail("must not start on another DATA_DIR's cluster")
        assert f"delete {pointer}" in str(caught.value)
        owner_file = pg.data_dir.parent / "requested-by"
        assert f"write {copy} into {owner_file}" in str(caught.value)
        owner_file.write_text(f"{copy}\n")  # as the message says for a moved DATA_DIR
        async with open_embedded_postgres(copy, relocation_root=relocation_root) as moved:
            assert moved.data_dir == pg.data_dir
        pointer.unlink()  # as the message says: then it gets a cluster of its own
        async with open_embedded_postgres(copy, relocation_root=relocation_root) as own:
            assert own.data_dir != pg.data_dir


@pytest.mark.skipif(not IS_ROOT, reason="only root runs Postgres as another user")
async def test_a_damaged_pointer_is_refused(base_dir: Path) -> None:
    requested = _private_data_dir(base_dir, "x")
    pointer = requested.with_name("postgres.location")
    etc_before = os.stat("/etc")
    for text in ("/etc/postgres\n", "relative/0123456789abcdef/postgres\n", ""):
        pointer.write_text(text)
        with trio.fail_after(TEST_TIMEOUT_S), pytest.raises(StartupError, match="should name"):
            async with open_embedded_postgres(requested, relocation_root=base_dir / "var-lib"):
                pytest.fail("must not start")
    etc_after = os.stat("/etc")
    assert (etc_after.st_uid, etc_after.st_mode) == (etc_before.st_uid, etc_before.st_mode)


@pytest.mark.skipif(not IS_ROOT, reason="only root runs Postgres as another user")
async def test_an_existing_cluster_that_became_unreachable_is_not_replaced(
    base_dir: Path,
) -> None:
    relocation_root = base_dir / "var-lib"
    requested = _private_data_dir(base_dir, "x")
    home = base_dir / "home"
    home.chmod(0o755)
    with trio.fail_after(TEST_TIMEOUT_S):
        async with open_embedded_postgres(requested, relocation_root=relocation_root) as pg:
            assert pg.data_dir == requested  # reachable: not relocated
        home.chmod(0o700)
        with pytest.raises(StartupError, match=r"not searchable by it \(it holds a cluster\)"):
            async with open_embedded_postgres(requested, relocation_root=relocation_root):
                pytest.fail("must not start an empty cluster elsewhere")
    assert not requested.with_name("postgres.location").exists()
    assert not relocation_root.exists()


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
