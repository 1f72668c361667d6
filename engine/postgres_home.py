"""Where the embedded PostgreSQL lives, and who may reach it.

The server binaries (Debian's ``/usr/lib/postgresql/<major>/bin``, else ``PATH``); the
user they run as (the ``postgres`` system user when the engine is root: PostgreSQL
refuses root); and the cluster's directory: ``DATA_DIR/postgres`` when that user can
traverse every ancestor, else a relocated home under ``/var/lib/afterhours-postgres``
recorded in ``DATA_DIR/postgres.location`` (engine/embedded_postgres.py runs the server
found here; why each rule exists is said there and in docs/stack-measurements.md 4).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.durable_files import replace_atomically
from engine.errors import StartupError

if TYPE_CHECKING:
    from collections.abc import Sequence

log = logging.getLogger("afterhours.postgres")

REQUIRED_BINARIES = ("postgres", "initdb", "pg_ctl", "pg_isready")
DEBIAN_POSTGRES_ROOT = Path("/usr/lib/postgresql")
SYSTEM_USER = "postgres"
# Where a cluster goes when the `postgres` user cannot reach DATA_DIR/postgres. Persistent
# (the FHS place for state data; /tmp and often /var/tmp are cleaned on reboot), owned by
# root and traversable by the `postgres` user, but not listable by anyone else.
# Not /var/lib/afterhours: that is the deployment's own DATA_DIR (docs/deploy/).
RELOCATION_ROOT = Path("/var/lib/afterhours-postgres")
RELOCATION_ROOT_MODE = 0o711
# Inside each relocated directory: which requested path it was made for. Two DATA_DIRs
# must never share a cluster, even if a pointer file was copied along with a DATA_DIR.
REQUESTED_BY_NAME = "requested-by"
STABLE_ID_HEX_CHARS = 16  # 64 bits of sha256; a collision is also caught by requested-by

_NOT_FOUND = (
    "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin and PATH): "
    "install them with `apt-get install postgresql`, or set DATABASE_URL to an existing server"
)


# --------------------------------------------------------------------------- binaries


def find_postgres_bindir(search: Sequence[Path] | None = None) -> Path:
    """The directory holding ``postgres``, ``initdb``, ``pg_ctl`` and ``pg_isready``.

    ``search`` lists candidate directories, tried in order; by default the newest
    ``/usr/lib/postgresql/<major>/bin`` first. Then every directory on ``PATH``.
    """
    candidates = list(_debian_bindirs() if search is None else search)
    candidates += [Path(entry) for entry in os.environ.get("PATH", "").split(os.pathsep) if entry]
    for candidate in candidates:
        if has_binaries(candidate):
            return candidate
    raise StartupError(_NOT_FOUND)


def _debian_bindirs() -> list[Path]:
    if not DEBIAN_POSTGRES_ROOT.is_dir():
        return []
    majors = [p for p in DEBIAN_POSTGRES_ROOT.iterdir() if _version_key(p.name) is not None]
    majors.sort(key=lambda p: _version_key(p.name) or (), reverse=True)
    return [p / "bin" for p in majors]


def _version_key(name: str) -> tuple[int, ...] | None:
    parts = name.split(".")
    if not all(part.isdigit() for part in parts):
        return None
    return tuple(int(part) for part in parts)


def has_binaries(directory: Path) -> bool:
    return all(
        (directory / name).is_file() and os.access(directory / name, os.X_OK)
        for name in REQUIRED_BINARIES
    )


# --------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class RunAs:
    """The unprivileged identity the binaries run under when the engine is root."""

    name: str
    uid: int
    gid: int
    home: str


def run_as() -> RunAs | None:
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise StartupError(
            f"running as root, but there is no `{SYSTEM_USER}` system user to run the embedded "
            "PostgreSQL as: install the `postgresql` package, or set DATABASE_URL"
        ) from None
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def _may_traverse(st: os.stat_result, who: RunAs) -> bool:
    # With extra_groups=[] the child has exactly one group: its primary gid.
    if st.st_uid == who.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == who.gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _blocking_ancestor(data_dir: Path, who: RunAs) -> Path | None:
    """The topmost ancestor of ``data_dir`` that ``who`` cannot traverse, if any."""
    for ancestor in reversed(data_dir.parents):
        if not _may_traverse(ancestor.stat(), who):
            return ancestor
    return None


def _unreachable(data_dir: Path, blocker: Path, who: RunAs, why_not_elsewhere: str) -> str:
    return (
        f"the `{who.name}` user cannot reach the embedded PostgreSQL data directory "
        f"{data_dir}: {blocker} is not searchable by it{why_not_elsewhere}; run "
        f"`chmod o+x {blocker}` or set DATABASE_URL"
    )


def _check_traversable(data_dir: Path, who: RunAs) -> None:
    """Raise if ``who`` cannot reach ``data_dir``, naming the topmost blocking ancestor."""
    blocker = _blocking_ancestor(data_dir, who)
    if blocker is not None:
        raise StartupError(_unreachable(data_dir, blocker, who, ""))


def make_owned_dir(path: Path, who: RunAs | None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if who is not None:
        _check_traversable(path, who)
        os.chown(path, who.uid, who.gid)
    os.chmod(path, 0o700)


def prepare_data_dir(data_dir: Path, who: RunAs | None) -> bool:
    """Create the cluster directory, owned by ``who``; True if it needs initdb."""
    try:
        make_owned_dir(data_dir, who)
    except OSError as exc:
        raise StartupError(
            f"cannot prepare the embedded PostgreSQL data directory {data_dir}: "
            f"{exc.strerror or exc}; choose another DATA_DIR or set DATABASE_URL"
        ) from exc
    if (data_dir / "PG_VERSION").exists():
        return False
    if any(data_dir.iterdir()):
        raise StartupError(
            f"{data_dir} is neither empty nor a PostgreSQL cluster (no PG_VERSION): move it "
            "away to let the engine create a new one, or set DATABASE_URL"
        )
    return True


# --------------------------------------------------------------------------- relocation


class _NoRelocation(Exception):
    """No reachable place for a relocated cluster could be made (the reason)."""


def _pointer_path(requested: Path) -> Path:
    # Next to the requested cluster, like its lock: inside DATA_DIR, so it goes wherever
    # DATA_DIR goes and an operator looking there finds where the data is.
    return requested.with_name(f"{requested.name}.location")


def _stable_id(requested: Path) -> str:
    """The same for the same resolved path, different for any other one."""
    return hashlib.sha256(str(requested).encode()).hexdigest()[:STABLE_ID_HEX_CHARS]


def _read_pointer(pointer: Path) -> Path | None:
    try:
        text = pointer.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StartupError(f"cannot read {pointer}: {exc.strerror or exc}") from exc
    recorded = Path(text)
    # Only the shape we write: root creates the recorded directory and hands it to
    # `postgres`, so a damaged or hand-edited pointer must not name /etc/postgres or the like.
    if not (
        recorded.is_absolute()
        and ".." not in recorded.parts
        and recorded.name == "postgres"
        and re.fullmatch(f"[0-9a-f]{{{STABLE_ID_HEX_CHARS}}}", recorded.parent.name)
    ):
        raise StartupError(
            f"{pointer} should name where the embedded PostgreSQL cluster lives, but holds "
            f"{text!r}: restore it, or delete it to start a new cluster"
        )
    return recorded


def _prepare_relocation(home: Path, requested: Path, who: RunAs) -> None:
    """Make ``home`` (the relocated cluster's parent, also holding its password file and
    initdb staging) and ``home.parent`` root-owned 0711 directories ``who`` can reach,
    ``home`` recorded as made for ``requested``. ``_NoRelocation`` if they cannot be;
    ``StartupError`` if ``home`` was made for another path.

    Both are arranged like DATA_DIR itself (root's, 0711: traversable, not listable), not
    owned by `postgres`: root writes files in ``home``, and in a directory `postgres` may
    write to it could plant a symlink for root to follow."""
    try:
        for directory in (home.parent, home):
            created = not directory.exists()
            directory.mkdir(mode=RELOCATION_ROOT_MODE, parents=True, exist_ok=True)
            if created:
                os.chmod(directory, RELOCATION_ROOT_MODE)  # mkdir's mode is cut by the umask
            st = directory.lstat()
            # Anyone else who may write here could swap in a symlink for root to follow.
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
                raise _NoRelocation(
                    f"{directory} is not a directory owned and writable only by root"
                )
        blocker = _blocking_ancestor(home / "postgres", who)
        if blocker is not None:
            raise _NoRelocation(f"{blocker} is not searchable by it either")
        owner_file = home / REQUESTED_BY_NAME
        try:
            owner = owner_file.read_text().strip()
        except FileNotFoundError:
            replace_atomically(owner_file, f"{requested}\n".encode())
            return
    except OSError as exc:
        raise _NoRelocation(f"cannot prepare {home}: {exc.strerror or exc}") from exc
    if owner != str(requested):
        raise StartupError(
            f"the embedded PostgreSQL cluster in {home} belongs to {owner}, not to "
            f"{requested} (a copied DATA_DIR?): delete {_pointer_path(requested)} to give "
            f"this DATA_DIR a cluster of its own (if DATA_DIR was moved instead, write "
            f"{requested} into {owner_file}), or set DATABASE_URL"
        )


def locate_cluster(requested: Path, who: RunAs | None, relocation_root: Path | None) -> Path:
    """Where the cluster for ``requested`` (a resolved DATA_DIR/postgres) lives: there,
    or where its pointer file says, or in a new relocated place when the `postgres` user
    cannot reach ``requested``. Logs one line whenever the cluster is elsewhere."""
    if who is None:  # PostgreSQL runs as the engine's own user, who owns DATA_DIR
        return requested
    pointer = _pointer_path(requested)
    try:
        requested.parent.mkdir(parents=True, exist_ok=True)
        blocker = _blocking_ancestor(requested, who)
    except OSError as exc:
        raise StartupError(
            f"cannot prepare the embedded PostgreSQL data directory {requested}: "
            f"{exc.strerror or exc}; choose another DATA_DIR or set DATABASE_URL"
        ) from exc
    recorded = _read_pointer(pointer)
    if recorded is not None:
        # Followed even once DATA_DIR has become reachable: the data is there.
        try:
            _prepare_relocation(recorded.parent, requested, who)
        except _NoRelocation as exc:
            raise StartupError(
                f"the embedded PostgreSQL cluster recorded in {pointer} is unusable: {exc}; "
                "set DATABASE_URL"
            ) from exc
        cluster = recorded
    else:
        if blocker is None:
            return requested
        if (requested / "PG_VERSION").exists():
            # A cluster made while the path was reachable: starting an empty one elsewhere
            # would look like lost data.
            raise StartupError(_unreachable(requested, blocker, who, " (it holds a cluster)"))
        if relocation_root is None:
            raise StartupError(_unreachable(requested, blocker, who, ""))
        home = relocation_root / _stable_id(requested)
        try:
            _prepare_relocation(home, requested, who)
        except _NoRelocation as exc:
            reason = f", and no cluster can live in {relocation_root} instead ({exc})"
            raise StartupError(_unreachable(requested, blocker, who, reason)) from exc
        cluster = home / "postgres"
        try:
            replace_atomically(pointer, f"{cluster}\n".encode())
        except OSError as exc:
            raise StartupError(f"cannot write {pointer}: {exc.strerror or exc}") from exc
    why = (
        f"{blocker} is not searchable by the `{who.name}` user"
        if blocker is not None
        else f"placed there earlier, when the `{who.name}` user could not reach {requested}"
    )
    log.info(
        "the embedded PostgreSQL cluster for %s lives in %s (%s; see %s)",
        requested,
        cluster,
        why,
        pointer,
    )
    return cluster
