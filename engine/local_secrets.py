"""Start-up I/O that configuration needs: the data directory and locally kept tokens.

Run once after ``load_settings``: ``prepare_data_dir`` then ``ensure_local_secrets``
(which also prepares ``DATA_DIR`` itself before touching a token file).
For local use (a loopback ``PUBLIC_URL``) an unset ``ADMIN_TOKEN`` or
``TWILIO_AUTH_TOKEN`` is read from, or generated into, a 0600 file in ``DATA_DIR`` so
that nobody has to invent one; anywhere else they must be set explicitly.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import secrets
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.durable_files import replace_atomically
from engine.errors import ConfigError, StartupError
from engine.secret import Secret
from engine.settings_table import ADMIN_TOKEN_MIN_CHARS

if TYPE_CHECKING:
    from pathlib import Path

    from engine.config import Settings

TOKEN_FILE_MODE = 0o600
# Traversable but not listable by others: the embedded PostgreSQL runs as the `postgres`
# user when the engine runs as root, and must reach DATA_DIR/postgres (else its cluster is
# relocated, see engine/postgres_home.py); the token files in here are 0600 each, so
# nobody else can read them.
DATA_DIR_MODE = 0o711


@dataclass(frozen=True, slots=True)
class GeneratedSecret:
    """Where a token left unset in the configuration came from (never its value)."""

    variable: str
    path: Path
    created: bool

    def describe(self) -> str:
        """One log line, e.g. ``ADMIN_TOKEN: generated, stored in /data/admin_token``."""
        how = "generated, stored in" if self.created else "read from"
        return f"{self.variable}: {how} {self.path}"


def prepare_data_dir(data_dir: Path) -> None:
    """Create ``data_dir`` (mode 0700) if missing, and check that it is a directory owned
    by and writable for this process's user. Raises ``StartupError`` otherwise."""
    try:
        status = data_dir.stat()
    except FileNotFoundError:
        _create_dir(data_dir)
        status = data_dir.stat()
    except OSError as exc:
        raise StartupError(f"cannot inspect DATA_DIR={data_dir}: {exc.strerror}") from exc
    if not stat.S_ISDIR(status.st_mode):
        raise StartupError(
            f"DATA_DIR={data_dir} exists but is not a directory: move it away or choose "
            "another DATA_DIR"
        )
    if status.st_uid != os.geteuid():
        raise StartupError(
            f"DATA_DIR={data_dir} is owned by {_describe_uid(status.st_uid)}, not by the "
            f"engine's user {_describe_uid(os.geteuid())}: chown it or choose another DATA_DIR"
        )
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise StartupError(
            f"DATA_DIR={data_dir} is not writable (mode {stat.S_IMODE(status.st_mode):#o}): "
            "chmod u+rwx it or choose another DATA_DIR"
        )


def ensure_local_secrets(settings: Settings) -> tuple[Settings, list[GeneratedSecret]]:
    """Fill in unset local tokens from ``DATA_DIR``, generating them on first use.

    Returns the completed settings and what was read or generated, for the caller to
    log. Raises ``ConfigError`` for an unset token when ``PUBLIC_URL`` is not local.
    """
    used: list[GeneratedSecret] = []
    admin_token = settings.admin_token
    if admin_token is None:
        admin_token = _local_token(settings, "ADMIN_TOKEN", ADMIN_TOKEN_MIN_CHARS, used)
    twilio_auth_token = settings.twilio_auth_token
    if twilio_auth_token is None:
        twilio_auth_token = _local_token(settings, "TWILIO_AUTH_TOKEN", 1, used)
    completed = dataclasses.replace(
        settings, admin_token=admin_token, twilio_auth_token=twilio_auth_token
    )
    return completed, used


def _local_token(
    settings: Settings, variable: str, min_chars: int, used: list[GeneratedSecret]
) -> Secret:
    """The token kept in ``DATA_DIR/<variable in lower case>``, noted in ``used``."""
    if not settings.is_local:
        raise ConfigError(
            variable,
            None,
            "required when PUBLIC_URL is not a local address (set it, or use a "
            "loopback PUBLIC_URL for local use)",
        )
    prepare_data_dir(settings.data_dir)
    path = settings.data_dir / variable.lower()
    token, created = _read_or_create_token(path, min_chars)
    used.append(GeneratedSecret(variable, path, created))
    return Secret(token)


def _create_dir(data_dir: Path) -> None:
    try:
        data_dir.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(
            f"cannot create DATA_DIR={data_dir}: {exc.strerror}: create it or choose "
            "another DATA_DIR"
        ) from exc


def _describe_uid(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _read_or_create_token(path: Path, min_chars: int) -> tuple[str, bool]:
    """The token stored at ``path`` and ``False``, or a new one and ``True``."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return _create_token(path), True
    except OSError as exc:
        raise StartupError(f"cannot read token file {path}: {exc.strerror}") from exc
    try:
        _check_token_file(path, fd)
        token = _read_all(fd).decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise StartupError(f"cannot read token file {path}: {exc}") from exc
    finally:
        os.close(fd)
    if len(token) < min_chars:
        raise StartupError(
            f"token file {path} is empty or shorter than {min_chars} characters: delete it "
            "to have a new token generated"
        )
    return token, False


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


def _check_token_file(path: Path, fd: int) -> None:
    """Refuse a token file someone else could have planted; tighten one others can read."""
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        raise StartupError(f"token file {path} is not a regular file: remove it")
    if status.st_uid != os.geteuid():
        raise StartupError(
            f"token file {path} is owned by {_describe_uid(status.st_uid)}, not by the "
            f"engine's user {_describe_uid(os.geteuid())}: remove it or chown it"
        )
    if stat.S_IMODE(status.st_mode) & ~TOKEN_FILE_MODE:
        # Wider permissions are a leftover from copying the file around, not an attack:
        # tightening them is enough.
        os.fchmod(fd, TOKEN_FILE_MODE)


def _create_token(path: Path) -> str:
    """Write a new token to ``path`` atomically: a crash leaves no file or a whole one."""
    token = secrets.token_urlsafe(32)
    try:
        replace_atomically(path, f"{token}\n".encode(), mode=TOKEN_FILE_MODE)
    except OSError as exc:
        raise StartupError(f"cannot write token file {path}: {exc.strerror}") from exc
    return token
