"""A benchmark never replaces a committed result by accident (bench/results_file.py)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import pytest

from bench import results_file

if TYPE_CHECKING:
    from pathlib import Path


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    results_file.add_output_options(parser)
    return parser.parse_args(argv)


def test_without_output_a_run_gets_a_new_timestamped_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(results_file, "RESULTS_DIR", tmp_path)
    (tmp_path / "calls.json").write_text("{}")
    args = parse([])
    path = results_file.results_path(args, "calls")
    assert path.parent == tmp_path
    assert path.name.startswith("calls-")
    assert path.name.endswith("Z.json")
    assert args.output == path.stem  # the chart and the summary line use the same name


def test_a_taken_name_is_refused_unless_overwrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(results_file, "RESULTS_DIR", tmp_path)
    (tmp_path / "calls.json").write_text("{}")
    with pytest.raises(SystemExit, match=r"bench/results/calls\.json exists"):
        results_file.results_path(parse(["--output", "calls"]), "calls")
    path = results_file.results_path(parse(["--output", "calls", "--overwrite"]), "calls")
    assert path == tmp_path / "calls.json"
    assert results_file.results_path(parse(["--output", "new"]), "calls") == tmp_path / "new.json"
