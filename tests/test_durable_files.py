"""engine/durable_files.py: a replaced file is the old one or the new one, whole."""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

import pytest

from engine.durable_files import fsync_directory, replace_atomically

if TYPE_CHECKING:
    from pathlib import Path


def test_a_file_is_replaced_whole_with_its_mode_and_nothing_left_beside_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cursor"
    replace_atomically(path, b"old")
    replace_atomically(path, b"new" * 100_000)
    assert path.read_bytes() == b"new" * 100_000
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["cursor"]


def test_a_failed_replace_keeps_what_was_there_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "pointer"
    path.mkdir()  # a rename of a file over a directory fails
    (path / "kept").write_text("x")
    with pytest.raises(OSError, match="Is a directory"):
        replace_atomically(path, b"new")
    assert os.listdir(tmp_path) == ["pointer"]
    assert (path / "kept").read_text() == "x"


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_the_owner_is_given_before_the_file_is_in_place(tmp_path: Path) -> None:
    path = tmp_path / "postgres.password"
    replace_atomically(path, b"secret", owner=(65534, 65534))
    assert (path.stat().st_uid, path.stat().st_gid) == (65534, 65534)


def test_a_directory_that_is_not_there_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fsync_directory(tmp_path / "missing")
