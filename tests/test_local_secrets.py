"""DATA_DIR checks and locally generated tokens."""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

import pytest

from engine.config import Secret, Settings, settings_from_mapping
from engine.errors import ConfigError, StartupError
from engine.local_secrets import (
    GeneratedSecret,
    ensure_local_secrets,
    prepare_data_dir,
)

if TYPE_CHECKING:
    from pathlib import Path

NOBODY_UID = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


def _settings(data_dir: Path, **values: str) -> Settings:
    return settings_from_mapping({"DATA_DIR": str(data_dir), **values})


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_prepare_data_dir_creates_missing_dir_and_parents(tmp_path: Path) -> None:
    data_dir = tmp_path / "a" / "b"
    prepare_data_dir(data_dir)
    assert data_dir.is_dir()
    assert _mode(data_dir) == 0o711


def test_prepare_data_dir_accepts_existing_dir(tmp_path: Path) -> None:
    prepare_data_dir(tmp_path)
    assert tmp_path.is_dir()


def test_prepare_data_dir_rejects_a_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.write_text("not a directory")
    with pytest.raises(StartupError, match=f"DATA_DIR={data_dir} exists but is not a directory"):
        prepare_data_dir(data_dir)


@needs_root
def test_prepare_data_dir_rejects_dir_owned_by_another_uid(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    os.chown(data_dir, NOBODY_UID, -1)
    with pytest.raises(StartupError) as caught:
        prepare_data_dir(data_dir)
    message = str(caught.value)
    assert message.startswith(f"DATA_DIR={data_dir} is owned by uid {NOBODY_UID}")
    assert f"not by the engine's user uid {os.geteuid()}" in message
    assert message.endswith("chown it or choose another DATA_DIR")
    assert "\n" not in message


def test_tokens_generated_with_0600_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first, used = ensure_local_secrets(_settings(data_dir))
    assert used == [
        GeneratedSecret("ADMIN_TOKEN", data_dir / "admin_token", created=True),
        GeneratedSecret("TWILIO_AUTH_TOKEN", data_dir / "twilio_auth_token", created=True),
    ]
    for generated in used:
        assert _mode(generated.path) == 0o600
    assert first.admin_token is not None
    assert first.twilio_auth_token is not None
    assert (data_dir / "admin_token").read_text().strip() == first.admin_token.reveal()
    assert len(first.admin_token.reveal()) >= 32
    assert first.admin_token != first.twilio_auth_token
    # Only the two token files: no temporary file was left behind.
    assert sorted(path.name for path in data_dir.iterdir()) == ["admin_token", "twilio_auth_token"]

    second, used_again = ensure_local_secrets(_settings(data_dir))
    assert second.admin_token == first.admin_token
    assert second.twilio_auth_token == first.twilio_auth_token
    assert [generated.created for generated in used_again] == [False, False]


def test_generated_secret_describe_never_shows_the_value(tmp_path: Path) -> None:
    settings, used = ensure_local_secrets(_settings(tmp_path))
    assert used[0].describe() == f"ADMIN_TOKEN: generated, stored in {tmp_path / 'admin_token'}"
    assert settings.admin_token is not None
    assert settings.admin_token.reveal() not in used[0].describe()
    _, used_again = ensure_local_secrets(_settings(tmp_path))
    assert used_again[0].describe() == f"ADMIN_TOKEN: read from {tmp_path / 'admin_token'}"


def test_preset_tokens_left_alone_and_no_file_written(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    settings = _settings(
        data_dir, ADMIN_TOKEN="preset-admin-token-123", TWILIO_AUTH_TOKEN="preset-twilio"
    )
    completed, used = ensure_local_secrets(settings)
    assert completed == settings
    assert used == []
    assert not data_dir.exists()


def test_preset_admin_token_only_twilio_generated(tmp_path: Path) -> None:
    settings = _settings(tmp_path, ADMIN_TOKEN="preset-admin-token-123")
    completed, used = ensure_local_secrets(settings)
    assert completed.admin_token == Secret("preset-admin-token-123")
    assert [generated.variable for generated in used] == ["TWILIO_AUTH_TOKEN"]
    assert not (tmp_path / "admin_token").exists()


def test_non_local_public_url_requires_twilio_auth_token(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path / "data",
        PUBLIC_URL="https://calls.example.com",
        ADMIN_TOKEN="preset-admin-token-123",
    )
    with pytest.raises(ConfigError) as caught:
        ensure_local_secrets(settings)
    assert caught.value.variable == "TWILIO_AUTH_TOKEN"
    assert str(caught.value) == (
        "invalid TWILIO_AUTH_TOKEN=(value hidden): required when PUBLIC_URL is not a local "
        "address (set it, or use a loopback PUBLIC_URL for local use)"
    )
    assert not (tmp_path / "data").exists()


def test_non_local_public_url_requires_admin_token(tmp_path: Path) -> None:
    settings = _settings(tmp_path, PUBLIC_URL="https://calls.example.com")
    with pytest.raises(ConfigError, match="invalid ADMIN_TOKEN=") as caught:
        ensure_local_secrets(settings)
    assert caught.value.variable == "ADMIN_TOKEN"


def test_wide_token_file_permissions_tightened(tmp_path: Path) -> None:
    token_file = tmp_path / "admin_token"
    token_file.write_text("stored-admin-token-0123\n")
    token_file.chmod(0o644)
    settings, used = ensure_local_secrets(_settings(tmp_path))
    assert _mode(token_file) == 0o600
    assert settings.admin_token == Secret("stored-admin-token-0123")
    assert used[0] == GeneratedSecret("ADMIN_TOKEN", token_file, created=False)


def test_empty_token_file_rejected(tmp_path: Path) -> None:
    token_file = tmp_path / "twilio_auth_token"
    token_file.write_text("\n")
    token_file.chmod(0o600)
    with pytest.raises(StartupError, match=f"token file {token_file} is empty"):
        ensure_local_secrets(_settings(tmp_path, ADMIN_TOKEN="preset-admin-token-123"))


def test_short_admin_token_file_rejected(tmp_path: Path) -> None:
    token_file = tmp_path / "admin_token"
    token_file.write_text("short\n")
    with pytest.raises(StartupError, match="shorter than 16 characters"):
        ensure_local_secrets(_settings(tmp_path))


def test_token_path_that_is_a_directory_rejected(tmp_path: Path) -> None:
    (tmp_path / "admin_token").mkdir()
    with pytest.raises(StartupError, match="admin_token"):
        ensure_local_secrets(_settings(tmp_path))


@needs_root
def test_token_file_owned_by_another_uid_rejected(tmp_path: Path) -> None:
    token_file = tmp_path / "admin_token"
    token_file.write_text("planted-admin-token-0123\n")
    os.chown(token_file, NOBODY_UID, -1)
    with pytest.raises(StartupError, match=f"token file {token_file} is owned by uid 65534"):
        ensure_local_secrets(_settings(tmp_path))


def test_data_dir_that_is_a_file_rejected_by_ensure(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.write_text("")
    with pytest.raises(StartupError, match="is not a directory"):
        ensure_local_secrets(_settings(data_dir))
