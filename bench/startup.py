"""How long `afterhours serve` takes to answer /health and to exit after SIGTERM.

Cold: a fresh DATA_DIR (initdb of the embedded PostgreSQL, migrations). Warm: the same
DATA_DIR again. Each run starts the real CLI as a subprocess, polls GET /health every
20 ms, then sends SIGTERM and waits for the exit. Prints a table and writes
bench/results/startup.json.

    .venv/bin/python -m bench.startup [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.results_file import add_output_options, results_path
from engine.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 60.0
POLL_S = 0.02
ENGINE_VARIABLES = ("DATABASE_URL", "DATA_DIR", "PORT", "HOST", "PUBLIC_URL", "OPENAI_API_KEY")
# --with-key: as in production, an OpenAI key (and a URL no call will reach here): the
# built-in simulated model is then neither started nor imported.
WITH_KEY = {"OPENAI_API_KEY": "sk-bench-startup", "OPENAI_REALTIME_URL": "ws://127.0.0.1:9/v1"}


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def one_run(workdir: Path, with_key: bool) -> tuple[float, float]:
    """(seconds to the first 200 from /health, seconds from SIGTERM to exit)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ENGINE_VARIABLES}
    env["PORT"] = str(port)
    if with_key:
        env |= WITH_KEY
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve"],
        cwd=workdir,
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not healthy(port):
            if process.poll() is not None:
                raise SystemExit(f"engine exited with {process.returncode} before /health")
            if time.perf_counter() - started > DEADLINE_S:
                raise SystemExit("no /health within the deadline")
            time.sleep(POLL_S)
        ready_s = time.perf_counter() - started
        stopping = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=DEADLINE_S)
        exit_s = time.perf_counter() - stopping
        if code != 0:
            raise SystemExit(f"engine exited with {code} after SIGTERM")
        return ready_s, exit_s
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--with-key", action="store_true", help="an OpenAI key, as in production")
    add_output_options(parser)
    args = parser.parse_args()
    results = results_path(args, "startup-with-key" if args.with_key else "startup")
    cold, warm, exits = [], [], []
    for _ in range(args.runs):
        workdir = Path(tempfile.mkdtemp(prefix="afterhours-bench-", dir="/tmp"))
        workdir.chmod(0o755)  # the embedded PostgreSQL's user must traverse it
        try:
            ready_s, exit_s = one_run(workdir, args.with_key)
            cold.append(ready_s)
            exits.append(exit_s)
            ready_s, exit_s = one_run(workdir, args.with_key)
            warm.append(ready_s)
            exits.append(exit_s)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "command": f"python -m bench.startup --runs {args.runs}"
        + (" --with-key" if args.with_key else ""),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "cold_start_to_health_s": {"median": statistics.median(cold), "max": max(cold)},
        "warm_start_to_health_s": {"median": statistics.median(warm), "max": max(warm)},
        "sigterm_to_exit_s": {"median": statistics.median(exits), "max": max(exits)},
        "runs": args.runs,
    }
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(result, indent=2) + "\n")
    for name in ("cold_start_to_health_s", "warm_start_to_health_s", "sigterm_to_exit_s"):
        figures = result[name]
        assert isinstance(figures, dict)
        print(f"{name:26s} median {figures['median']:.2f} s   max {figures['max']:.2f} s")
    print(f"written to {results.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
