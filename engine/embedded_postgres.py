"""A private PostgreSQL server run from the machine's own server binaries.

Why this exists: when the operator sets no ``DATABASE_URL`` the engine still needs a
database. Rather than bundling one (pgserver and friends chmod every ancestor directory
when run as root, and lose track of orphans), we start Debian's ``postgresql-<major>``
binaries ourselves, as a child process we own, on a private port on 127.0.0.1.

The traps, each measured on Debian 12 / PostgreSQL 15 (see docs/stack-measurements.md 4):

* Postgres refuses to run as root. As root every binary runs as the ``postgres`` system
  user (``user=``/``group=``/``extra_groups=[]``); that user must be able to traverse
  every ancestor of the data directory. We never chmod anything outside the cluster
  directory ourselves. Where it cannot (``DATA_DIR`` in a 0700 home, as ``/root`` is on
  a fresh server) the cluster is *relocated*: it lives in
  ``/var/lib/afterhours-postgres/<id>/postgres`` (``<id>`` derived from the requested path),
  recorded in ``DATA_DIR/postgres.location``. Only where no such place can be made do we
  stop and say which directory blocks it.
* The Unix socket path limit (107 bytes) breaks long data directories: we listen on TCP
  only (``unix_socket_directories`` empty, ``listen_addresses=127.0.0.1``).
* A postmaster left behind by a SIGKILLed engine holds the data-directory lock, and
  ``pg_isready`` happily reports *it* as ready while our own child has already exited
  with "lock file already exists". We stop such an orphan before starting
  (engine/postgres_cluster.py), and readiness requires our own child to be alive as well.
* ``PR_SET_PDEATHSIG`` must not be used: trio forks from a worker thread, and the
  signal fires when that thread idles out (10 s later), killing a healthy server.
* The postmaster runs in its own session so a terminal Ctrl-C reaches only the engine,
  which then stops Postgres itself (shielded, bounded: SIGINT, then SIGKILL of the whole
  process group). Every external command runs under a timeout.

This module is the postmaster's life: started, watched, stopped, and started again on
the same port. Where the cluster lives and who may reach it is engine/postgres_home.py's;
the cluster's lock, initdb, the role's password and an orphan's stop are
engine/postgres_cluster.py's.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from engine.errors import StartupError
from engine.ports import free_port
from engine.postgres_cluster import (
    DB_USER,
    PSQL_TIMEOUT_S,
    Tools,
    exclusive,
    first_line,
    initdb,
    read_password,
    stop_orphan,
)
from engine.postgres_home import (
    RELOCATION_ROOT,
    REQUIRED_BINARIES,
    RunAs,
    find_postgres_bindir,
    has_binaries,
    locate_cluster,
    prepare_data_dir,
    run_as,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = [
    "EmbeddedPostgres",
    "Postmaster",
    "open_embedded_postgres",
    "open_postmaster",
]

log = logging.getLogger("afterhours.postgres")

DB_NAME = "afterhours"
SERVER_LOG_NAME = "server.log"
_DATABASE_EXISTS_SQL = "SELECT 1 FROM pg_database WHERE datname = 'afterhours'"
_CREATE_DATABASE_SQL = "CREATE DATABASE afterhours"

PROBE_TIMEOUT_S = 5.0
READY_POLL_INTERVAL_S = 0.05
SWEEP_TIMEOUT_S = 2.0  # SIGKILLed backends are gone in milliseconds
LOG_TAIL_LINES = 5


@dataclass(frozen=True)
class EmbeddedPostgres:
    """A running private server: connect with ``dsn``; ``pid`` is the postmaster's."""

    dsn: str
    port: int
    pid: int
    data_dir: Path


# --------------------------------------------------------------------------- postmaster


def _open_log(path: Path, who: RunAs | None) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    if who is not None:
        os.fchown(fd, who.uid, who.gid)
    return fd


def _log_tail(path: Path) -> str:
    try:
        data = path.read_bytes()[-8192:]
    except OSError:
        return "(no server log)"
    lines = [line.strip() for line in data.decode(errors="replace").splitlines() if line.strip()]
    return " | ".join(lines[-LOG_TAIL_LINES:]) or "(server log is empty)"


async def _spawn_postmaster(tools: Tools, port: int, log_path: Path) -> trio.Process:
    argv = tools.argv(
        "postgres",
        *("-D", str(tools.data_dir), "-p", str(port)),
        *("-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="),
        # No LLVM JIT: it makes memory executable after writing it, which the systemd
        # unit's MemoryDenyWriteExecute refuses (the query then fails: "error during
        # JITing: Permission denied"), and the engine's queries are too small to gain.
        *("-c", "jit=off"),
    )
    log_fd = _open_log(log_path, tools.who)
    try:
        return await trio.lowlevel.open_process(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=subprocess.STDOUT,
            cwd=tools.data_dir,
            env=tools.env,
            start_new_session=True,
            user=None if tools.who is None else tools.who.uid,
            group=None if tools.who is None else tools.who.gid,
            extra_groups=None if tools.who is None else [],
        )
    finally:
        os.close(log_fd)


async def _wait_ready(tools: Tools, proc: trio.Process, port: int, log_path: Path) -> None:
    """Until ``pg_isready`` answers on our port *and* our own child is still alive."""
    probe = tools.argv("pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port))
    probe += ["-U", DB_USER, "-d", "postgres", "-t", str(int(PROBE_TIMEOUT_S))]
    while True:
        if proc.poll() is not None:
            raise StartupError(
                f"embedded PostgreSQL exited during start-up (status {proc.returncode}): "
                f"{_log_tail(log_path)} (see {log_path})"
            )
        result = await tools.run(probe, timeout_s=PROBE_TIMEOUT_S + 1.0)
        if result.returncode == 0 and proc.poll() is None:
            return
        await trio.sleep(READY_POLL_INTERVAL_S)


async def _ensure_database(tools: Tools, port: int) -> None:
    """Create the ``afterhours`` database unless it exists (also heals a first run that
    was killed between initdb and createdb)."""
    psql = tools.argv("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1")
    psql += ["-p", str(port), "-U", DB_USER, "-d", "postgres", "-tA", "-c"]
    found = await tools.run([*psql, _DATABASE_EXISTS_SQL], timeout_s=PSQL_TIMEOUT_S)
    if found.returncode == 0 and (found.stdout or b"").strip() == b"1":
        return
    if found.returncode == 0:
        log.info("creating database %s", DB_NAME)
        found = await tools.run([*psql, _CREATE_DATABASE_SQL], timeout_s=PSQL_TIMEOUT_S)
    if found.returncode != 0:
        raise StartupError(
            f"embedded PostgreSQL: cannot create database {DB_NAME}: {first_line(found)}"
        )


async def _stop_postmaster(proc: trio.Process, stop_timeout_s: float) -> None:
    """Fast shutdown, then SIGKILL of the whole process group. Call shielded."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGINT)
        with trio.move_on_after(stop_timeout_s):
            await proc.wait()
    if proc.returncode is None:
        log.warning("PostgreSQL (pid %d) ignored fast shutdown; killing it", proc.pid)
    # The postmaster leads its own process group (start_new_session): sweep any backend
    # that outlived it, too.
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with trio.move_on_after(stop_timeout_s):
        await proc.wait()
    if proc.returncode is None:
        log.error("PostgreSQL (pid %d) did not exit after SIGKILL", proc.pid)
    else:
        log.info("embedded PostgreSQL (pid %d) stopped", proc.pid)


# --------------------------------------------------------------------------- public API


def _resolve_bindir(bindir: Path | None) -> Path:
    if bindir is None:
        bindir = find_postgres_bindir()
    elif not has_binaries(bindir):
        raise StartupError(
            f"{bindir} does not hold the PostgreSQL server binaries "
            f"({', '.join(REQUIRED_BINARIES)}); set DATABASE_URL to an existing server"
        )
    if shutil.which("psql", path=str(bindir)) is None:
        raise StartupError(
            f"{bindir} has no `psql`: install `postgresql-client`, or set DATABASE_URL"
        )
    return bindir


def _setup(data_dir: Path, bindir: Path | None, relocation_root: Path | None) -> tuple[Tools, bool]:
    """Everything synchronous before the first command; True if initdb is needed."""
    who = run_as()
    bindir = _resolve_bindir(bindir)
    cluster = locate_cluster(data_dir.resolve(), who, relocation_root)
    tools = Tools.create(bindir, cluster, who)
    return tools, prepare_data_dir(cluster, who)


@asynccontextmanager
async def open_embedded_postgres(
    data_dir: Path,
    *,
    ready_timeout_s: float = 15.0,
    stop_timeout_s: float = 5.0,
    bindir: Path | None = None,
    port: int | None = None,
    relocation_root: Path | None = RELOCATION_ROOT,
) -> AsyncIterator[EmbeddedPostgres]:
    """Run a private PostgreSQL on ``data_dir`` (initdb on first use) for the block, on
    ``port`` or else on a free port. Run as root, the cluster lives under
    ``relocation_root`` instead when the `postgres` user cannot reach ``data_dir``
    (``None``: never; then that is an error).

    Yields once the server accepts connections and database ``afterhours`` exists; stops
    the server on exit, whether by return, error or cancellation. Nothing restarts it if
    it dies: ``open_postmaster`` and engine/postgres_supervisor.py do that.
    """
    async with open_postmaster(
        data_dir,
        ready_timeout_s=ready_timeout_s,
        stop_timeout_s=stop_timeout_s,
        bindir=bindir,
        port=port,
        relocation_root=relocation_root,
    ) as postmaster:
        yield postmaster.server


@asynccontextmanager
async def open_postmaster(
    data_dir: Path,
    *,
    ready_timeout_s: float = 15.0,
    stop_timeout_s: float = 5.0,
    bindir: Path | None = None,
    port: int | None = None,
    relocation_root: Path | None = RELOCATION_ROOT,
) -> AsyncIterator[Postmaster]:
    """``open_embedded_postgres``, but yielding the ``Postmaster`` itself, started: its
    owner may watch it and start it again on the same port (the DSN stays valid)."""
    # The lock is on the requested path even for a relocated cluster: one DATA_DIR, one
    # lock, so two engines on it never both run the cluster (or race writing its
    # pointer); and no two DATA_DIRs reach the same relocated cluster (requested-by).
    with exclusive(data_dir):
        tools, first_run = _setup(data_dir, bindir, relocation_root)
        if first_run:
            await initdb(tools)
        password = read_password(tools.data_dir)
        if password is not None:
            tools = tools.with_password(password)
        await stop_orphan(tools)
        postmaster = Postmaster(
            tools, port or free_port(), password, ready_timeout_s, stop_timeout_s
        )
        try:
            await postmaster.start()
            yield postmaster
        finally:
            await postmaster.stop()


class Postmaster:
    """Our one postmaster, on one port for the engine's lifetime. ``start`` may be
    called again after it exited: every connection string handed out stays valid."""

    def __init__(
        self,
        tools: Tools,
        port: int,
        password: str | None,
        ready_timeout_s: float,
        stop_timeout_s: float,
    ) -> None:
        self._tools = tools
        self.port = port
        self.log_path = tools.data_dir / SERVER_LOG_NAME
        self._password = password
        self._ready_timeout_s = ready_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._proc: trio.Process | None = None

    @property
    def pid(self) -> int | None:
        """The current postmaster's pid; ``None`` before the first start."""
        return None if self._proc is None else self._proc.pid

    @property
    def server(self) -> EmbeddedPostgres:
        assert self._proc is not None, "start() first"
        credentials = DB_USER if self._password is None else f"{DB_USER}:{self._password}"
        return EmbeddedPostgres(
            dsn=f"postgresql://{credentials}@127.0.0.1:{self.port}/{DB_NAME}",
            port=self.port,
            pid=self._proc.pid,
            data_dir=self._tools.data_dir,
        )

    async def start(self) -> None:
        """Spawn the postmaster and return once it accepts connections and database
        ``afterhours`` exists. ``StartupError`` (the child stopped again) otherwise."""
        proc = await _spawn_postmaster(self._tools, self.port, self.log_path)
        self._proc = proc
        try:
            try:
                with trio.fail_after(self._ready_timeout_s):
                    await _wait_ready(self._tools, proc, self.port, self.log_path)
            except trio.TooSlowError:
                raise StartupError(
                    "embedded PostgreSQL did not become ready within "
                    f"{self._ready_timeout_s:g} s; see {self.log_path}"
                ) from None
            await _ensure_database(self._tools, self.port)
        except BaseException:
            with trio.CancelScope(shield=True):
                await _stop_postmaster(proc, self._stop_timeout_s)
            raise
        log.info("embedded PostgreSQL (pid %d) listening on 127.0.0.1:%d", proc.pid, self.port)

    async def wait_exit(self) -> int:
        """Until the current postmaster exits (the kernel tells trio: no polling); its
        status, negative for the signal that killed it."""
        assert self._proc is not None, "start() first"
        return await self._proc.wait()

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends (its process group)."""
        if self._proc is not None and self._proc.returncode is None:
            with suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)

    async def sweep(self) -> None:
        """After the postmaster died: kill the backends it left behind and wait (bounded)
        until they are gone, because a new postmaster refuses to start while one of them
        still holds the old shared memory. They lead no life of their own: they are
        reparented away from us, so they are found by process group in /proc."""
        if self._proc is None:
            return
        group = self._proc.pid
        with suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        with trio.move_on_after(SWEEP_TIMEOUT_S):
            while _group_alive(group):  # noqa: ASYNC110 - no event tells us; bounded
                await trio.sleep(READY_POLL_INTERVAL_S)

    async def accepting(self) -> bool | None:
        """Whether the server answers ``pg_isready``: True (accepting), False (it
        answered: starting, recovering, shutting down), ``None`` (no answer at all)."""
        probe = self._tools.argv("pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port))
        probe += ["-U", DB_USER, "-d", "postgres", "-t", str(int(PROBE_TIMEOUT_S))]
        try:
            result = await self._tools.run(probe, timeout_s=PROBE_TIMEOUT_S + 1.0)
        except StartupError:  # pg_isready itself did not finish: as good as no answer
            return None
        # pg_isready: 0 accepting, 1 rejecting, 2 no response, 3 no attempt made.
        return {0: True, 1: False}.get(result.returncode)

    def log_tail(self) -> str:
        return _log_tail(self.log_path)

    async def stop(self) -> None:
        """Fast shutdown, then SIGKILL (bounded, shielded); nothing if never started."""
        if self._proc is not None:
            with trio.CancelScope(shield=True):
                await _stop_postmaster(self._proc, self._stop_timeout_s)


def _group_alive(group: int) -> bool:
    """True while a live (not zombie) process of process group ``group`` exists."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # gone meanwhile
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            return True
    return False
