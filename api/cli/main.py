"""``afterhours``: the command line.

``afterhours doctor`` checks the configuration, the database, the model's and Twilio's
reachability, PUBLIC_URL and the ports, one line each (api/cli/doctor.py).
``afterhours serve`` loads and validates the configuration, prepares DATA_DIR and the
local tokens, then runs the engine until SIGINT/SIGTERM. Whatever stops it at start-up
(a bad setting, an unreachable database, a port in use, missing PostgreSQL binaries)
is printed as one line and a non-zero exit; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from api.cli.admin import add_call_commands, add_commands, run_command
from api.cli.simulate_args import add_commands as add_simulation_commands
from engine import __version__
from engine.config import load_settings
from engine.errors import StartupError, find_escalation, find_startup_error

if TYPE_CHECKING:
    from api.root.engine import Engine
    from engine.config import Settings

log = logging.getLogger("afterhours")

EXIT_OK = 0
EXIT_STARTUP_FAILED = 1
EXIT_BAD_CONFIG = 2
EXIT_ESCALATED = 3  # a supervisor gave up at run time: the orchestrator should restart us

# What the program is, at the top of --help: someone who just installed it reads this
# first. Plain text here, not a module's docstring: nothing is imported for it.
DESCRIPTION = (
    "afterhours answers a trade business's phone line after hours (plumbers, HVAC, "
    "electricians): Twilio streams the call to this engine, which bridges it to an OpenAI "
    "Realtime voice agent that talks to the caller, calls the business's functions (free "
    "slots, booking, transfer to the on-call technician) and records the call. One engine "
    "serves many businesses, with an admin API, a dashboard, metrics and alerts; "
    "`afterhours doctor` checks a configuration, `afterhours serve` runs it."
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="afterhours", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"afterhours {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the engine until SIGINT/SIGTERM")
    serve.add_argument(
        "--env-file", type=Path, default=Path(".env"), help="dotenv file to read (default: .env)"
    )
    serve.add_argument(
        "--workers", type=int, help="engine processes sharing the ports (default: WORKERS, 1)"
    )
    doctor = commands.add_parser(
        "doctor",
        help="check the configuration, database, model, Twilio, PUBLIC_URL and ports",
        description="Check what `serve` needs, one line each (ok, warning or error, with "
        "what to do); exit 0 when nothing is an error, 1 otherwise. Sends no credential.",
    )
    doctor.add_argument(
        "--env-file", type=Path, default=Path(".env"), help="dotenv file to read (default: .env)"
    )
    doctor.add_argument(
        "--timeout-s",
        type=float,
        default=3.0,  # a healthy peer answers in well under a second
        help="the longest each network check waits (default: 3)",
    )
    bench = commands.add_parser(
        "bench", help="run a benchmark from bench/ (calls, analytics, startup, store_writes)"
    )
    bench.add_argument("name", choices=BENCHMARKS)
    bench.add_argument("options", nargs=argparse.REMAINDER, help="passed to the benchmark")
    add_commands(commands)
    call = add_simulation_commands(commands)
    add_call_commands(call)
    args = parser.parse_args(argv)
    places_calls = args.command == "simulate" or (args.command == "call" and not args.action)
    if places_calls and args.to is None:  # simulate requires it itself
        call.error("the following arguments are required: --to (or: afterhours call show SID)")
    if args.command == "serve":
        if args.workers is not None:
            os.environ["WORKERS"] = str(args.workers)  # the workers inherit it
        return _serve(args.env_file)
    if args.command == "bench":
        return _bench(args.name, args.options)
    if args.command == "doctor":
        from api.cli.doctor import run_doctor  # see main: --help imports none of it

        return run_doctor(os.environ, args.env_file, timeout_s=args.timeout_s)
    try:
        settings = load_settings(os.environ, Path(".env"))
    except StartupError as exc:
        print(f"afterhours: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if places_calls:
        # Imported here: the engine's modules (openai's types above all) take a second or
        # more to import, which a command that only talks to the admin API never needs.
        from api.cli.simulate import run_command as run_simulation

        return run_simulation(args, settings)
    return run_command(args, settings)


BENCHMARKS = ("calls", "analytics", "startup", "store_writes")


def _bench(name: str, options: list[str]) -> int:
    """``afterhours bench calls --levels 10,40``: ``python -m bench.calls --levels 10,40``
    from the source tree (the benchmarks are not part of the installed engine)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "bench" / f"{name}.py").exists():
        print(f"afterhours: no bench/{name}.py next to this engine ({root})", file=sys.stderr)
        return EXIT_STARTUP_FAILED
    command = [sys.executable, "-m", f"bench.{name}", *options]
    return subprocess.run(command, cwd=root, check=False).returncode


def _serve(env_file: Path) -> int:
    import trio  # see main: only serve needs the engine and its runtime

    from api.root.engine import run_engine
    from api.root.workers import Workers
    from engine.local_secrets import ensure_local_secrets, prepare_data_dir
    from engine.logs import configure_logging

    try:
        settings = load_settings(os.environ, env_file)
        prepare_data_dir(settings.data_dir)  # ownership checked even when no token is made
        settings, tokens = ensure_local_secrets(settings)
    except StartupError as exc:
        print(f"afterhours: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    configure_logging(
        settings.log_format, secrets=settings.secret_values(), level=settings.log_level
    )
    log.info("afterhours %s starting (DATA_DIR=%s)", __version__, settings.data_dir)
    for token in tokens:
        log.info("%s", token.describe())
    if settings.workers > 1 and settings.worker_index is None:
        log.info(
            "%d workers on port %d (each also on its own port)", settings.workers, settings.port
        )
        try:
            return trio.run(Workers(settings, env_file).run)
        except BaseException as exc:
            if (found := find_startup_error(exc)) is not None:
                log.critical("cannot start: %s", found)
                return EXIT_STARTUP_FAILED
            raise
    try:
        trio.run(partial(run_engine, settings, on_ready=partial(_log_ready, settings)))
    except BaseException as exc:
        if (found := find_startup_error(exc)) is not None:
            log.critical("cannot start: %s", found)
            return EXIT_STARTUP_FAILED
        if (escalation := find_escalation(exc)) is not None:
            log.critical("stopped: %s", escalation)
            return EXIT_ESCALATED
        raise
    log.info("afterhours stopped")
    return EXIT_OK


def _log_ready(settings: Settings, engine: Engine) -> None:
    log.info(
        "ready: %s (public URL %s, pid %d); GET /health answers; SIGTERM or Ctrl-C stops",
        ", ".join(engine.bound_urls),
        settings.public_url,
        os.getpid(),
    )


if __name__ == "__main__":
    sys.exit(main())
