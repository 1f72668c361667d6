"""Small files that survive a crash or a power cut whole: the generated tokens
(engine/local_secrets.py), the embedded PostgreSQL's pointer and owner files
(engine/postgres_home.py) and password file (engine/postgres_cluster.py), and the spool's
cursor (actors/store/spool.py).

A file's data is durable once it is fsync'd, but its name (a file just created, or
renamed over another) only once its directory is fsync'd too: without that, a power cut
can bring back the old file, or none, after we went on as if the new one were there.
"""

from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


def fsync_directory(directory: Path) -> None:
    """Make the names in ``directory`` (files created, renamed or removed) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(
    path: Path, data: bytes, *, mode: int = 0o600, owner: tuple[int, int] | None = None
) -> None:
    """Put ``data`` at ``path`` so that a crash leaves the old file or the new one, whole,
    never a part: written to a temporary file beside it, fsync'd, renamed over ``path``,
    and the directory fsync'd. ``owner`` (uid, gid) is given to the file before it is
    renamed into place. Raises ``OSError``.

    The temporary name is random and created exclusively (``O_EXCL``, which also refuses
    a symlink planted there): a fixed name left by a crash would otherwise block, or be
    followed by, every later write. A failure removes it."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    replaced = False
    try:
        try:
            if owner is not None:
                os.fchown(fd, *owner)
            unwritten = memoryview(data)
            while unwritten:  # a short write is allowed, if rare on a regular file
                unwritten = unwritten[os.write(fd, unwritten) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
        replaced = True
        fsync_directory(path.parent)
    finally:
        if not replaced:
            temporary.unlink(missing_ok=True)
