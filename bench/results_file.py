"""Where a benchmark writes its figures: ``bench/results/<name>.json``.

The committed results are what the docs quote; a new run must never replace one by
accident. Without ``--output`` a run writes ``<bench>-<UTC time>.json``; a name that is
taken is refused before the run starts (it may take minutes) unless ``--overwrite``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

RESULTS_DIR = Path(__file__).resolve().parents[1] / "bench" / "results"


def add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", help="results file name, no suffix (default: <bench>-<UTC time>)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace bench/results/<output>.json if present"
    )


def results_path(args: argparse.Namespace, bench: str) -> Path:
    """The file this run writes; ``SystemExit`` (before the run) when it would replace one."""
    name = args.output or f"{bench}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    args.output = name
    path = RESULTS_DIR / f"{name}.json"
    if path.exists() and not args.overwrite:
        raise SystemExit(
            f"bench/results/{name}.json exists (docs may quote it): choose another --output "
            "or pass --overwrite"
        )
    return path


def no_chart_message() -> str:
    return (
        "no chart: matplotlib is not installed (the bench extra: "
        ".venv/tools/bin/uv pip install --python .venv/bin/python -e '.[bench]')"
    )
