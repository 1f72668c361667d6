"""The embedded PostgreSQL's cluster on disk, and the commands run on it.

``exclusive`` holds a DATA_DIR's cluster for one engine at a time. ``Tools`` runs each
server binary as the right user (engine/postgres_home.py), in the cluster directory,
under a timeout. ``initdb`` makes a cluster, staged so that an interrupted one leaves
nothing half-made, with the ``afterhours`` role's password in a file beside it;
``stop_orphan`` stops a postmaster a killed engine left behind, which holds the data
directory's lock and would answer ``pg_isready`` in our child's place.
engine/embedded_postgres.py runs the server itself.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import secrets
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from engine.durable_files import replace_atomically
from engine.errors import StartupError
from engine.postgres_home import make_owned_dir

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Iterator, Mapping

    from engine.postgres_home import RunAs

log = logging.getLogger("afterhours.postgres")

DB_USER = "afterhours"
INITDB_TIMEOUT_S = 120.0
PG_CTL_STOP_WAIT_S = 10
PG_CTL_TIMEOUT_S = PG_CTL_STOP_WAIT_S + 10.0
PSQL_TIMEOUT_S = 15.0


@contextmanager
def exclusive(data_dir: Path) -> Iterator[None]:
    """Hold the cluster for this engine's lifetime. Without it, a second engine started
    on the same DATA_DIR would take the first one's live server for an orphan and stop
    it. The kernel drops the lock when the holder dies, so a killed engine's server is
    still recognised as an orphan. The fd is close-on-exec: PostgreSQL never holds it."""
    data_dir = data_dir.resolve()
    path = data_dir.with_name(f"{data_dir.name}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise StartupError(
                f"the embedded PostgreSQL in {data_dir} is in use by another afterhours "
                f"engine (pid {holder}): stop it, or give this one another DATA_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Tools:
    """Runs the server binaries as the right user, in the cluster directory."""

    bindir: Path
    data_dir: Path
    who: RunAs | None
    env: Mapping[str, str]

    @classmethod
    def create(cls, bindir: Path, data_dir: Path, who: RunAs | None) -> Tools:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        if who is not None:
            env.update(HOME=who.home, USER=who.name, LOGNAME=who.name)
        return cls(bindir, data_dir, who, env)

    def with_password(self, password: str) -> Tools:
        """The same tools, with the role's password for psql (never on a command line)."""
        return replace(self, env={**self.env, "PGPASSWORD": password})

    def argv(self, binary: str, *args: str) -> list[str]:
        return [str(self.bindir / binary), *args]

    async def run(self, argv: list[str], *, timeout_s: float) -> subprocess.CompletedProcess[bytes]:
        """Run to completion (never raises on exit status); StartupError on timeout."""
        try:
            with trio.fail_after(timeout_s):
                return await trio.run_process(
                    argv,
                    check=False,
                    capture_stdout=True,
                    capture_stderr=True,
                    cwd=self.data_dir,
                    env=self.env,
                    user=None if self.who is None else self.who.uid,
                    group=None if self.who is None else self.who.gid,
                    extra_groups=None if self.who is None else [],
                )
        except trio.TooSlowError:
            name = Path(argv[0]).name
            raise StartupError(
                f"embedded PostgreSQL: `{name}` did not finish within {timeout_s:g} s"
            ) from None


def first_line(result: subprocess.CompletedProcess[bytes]) -> str:
    text = (result.stderr or b"").decode(errors="replace").strip()
    text = text or (result.stdout or b"").decode(errors="replace").strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else f"exit status {result.returncode}"


async def initdb(tools: Tools) -> None:
    """Initialise a cluster next to ``data_dir`` and move it into place when complete, so
    an initdb interrupted by a signal or a crash never leaves a half-made cluster behind
    (the next start simply begins again)."""
    log.info("initialising a new PostgreSQL cluster in %s", tools.data_dir)
    staging = tools.data_dir.with_name(f"{tools.data_dir.name}.initdb")
    shutil.rmtree(staging, ignore_errors=True)  # what an interrupted earlier attempt left
    make_owned_dir(staging, tools.who)
    # Password authentication even on loopback: on a shared machine every local user can
    # reach 127.0.0.1, and "trust" would hand them the call records.
    _write_password(tools)
    argv = tools.argv(
        "initdb",
        *("-D", str(staging), "-U", DB_USER, "--auth=scram-sha-256"),
        f"--pwfile={_password_path(tools.data_dir)}",
        *("-E", "UTF8", "--locale=C", "--no-instructions"),
    )
    result = await tools.run(argv, timeout_s=INITDB_TIMEOUT_S)
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise StartupError(
            f"embedded PostgreSQL: initdb failed for {tools.data_dir}: {first_line(result)}; "
            "set DATABASE_URL to use another server"
        )
    tools.data_dir.rmdir()  # empty: checked by prepare_data_dir
    staging.rename(tools.data_dir)


async def stop_orphan(tools: Tools) -> None:
    """Stop a postmaster an earlier (killed) engine left running on this data dir."""
    data = str(tools.data_dir)
    status = await tools.run(tools.argv("pg_ctl", "status", "-D", data), timeout_s=PSQL_TIMEOUT_S)
    if status.returncode != 0:
        return
    match = re.search(rb"PID: (\d+)", status.stdout or b"")
    pid = match.group(1).decode() if match else "?"
    log.warning("stopping an orphaned PostgreSQL (pid %s) still running on %s", pid, data)
    for mode in ("fast", "immediate"):
        argv = tools.argv("pg_ctl", "stop", "-D", data, "-m", mode, "-w")
        argv += ["-t", str(PG_CTL_STOP_WAIT_S)]
        result = await tools.run(argv, timeout_s=PG_CTL_TIMEOUT_S)
        if result.returncode == 0:
            return
        log.warning("pg_ctl stop -m %s failed: %s", mode, first_line(result))
    raise StartupError(
        f"an orphaned PostgreSQL (pid {pid}) holds {data} and would not stop; "
        f"kill it (`kill -9 {pid}`) or set DATABASE_URL"
    )


def _password_path(data_dir: Path) -> Path:
    # Next to the cluster, not in it: initdb insists on an empty directory.
    return data_dir.with_name(f"{data_dir.name}.password")


def _write_password(tools: Tools) -> str:
    """A new password for the ``afterhours`` role, in a 0600 file initdb can read."""
    password = secrets.token_urlsafe(24)
    owner = None if tools.who is None else (tools.who.uid, tools.who.gid)
    replace_atomically(_password_path(tools.data_dir), password.encode(), owner=owner)
    return password


def read_password(data_dir: Path) -> str | None:
    """The role's password; ``None`` for a cluster made before passwords (trust auth)."""
    try:
        return _password_path(data_dir).read_text().strip() or None
    except FileNotFoundError:
        return None
