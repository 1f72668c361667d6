"""``afterhours call`` and ``afterhours simulate``: calls through the engine's real path,
placed by the simulated Twilio caller (engine/simulator/caller.py), with a summary per
call. With no accounts configured, ``make run`` plus ``afterhours simulate`` is a
complete call in the logs and the database."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import trio

from engine.simulator.caller import CALLER_SCRIPTS, CallerConfig, CallSummary, place_call

if TYPE_CHECKING:
    import argparse

    from engine.config import Settings


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    one = commands.add_parser("call", help="place one simulated call through the engine")
    many = commands.add_parser("simulate", help="place many simulated calls, some at once")
    many.add_argument("--calls", type=int, default=10)
    many.add_argument("--concurrency", type=int, default=5)
    for sub in (one, many):
        sub.add_argument("--to", required=True, help="the project's number (E.164)")
        sub.add_argument("--from", dest="from_number", default="+15550100000")
        sub.add_argument("--script", default="conversation", choices=sorted(CALLER_SCRIPTS))
        sub.add_argument("--url", help="the engine's base URL (default: http://HOST:PORT)")


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    token = settings.twilio_auth_token
    if token is None:
        stored = settings.data_dir / "twilio_auth_token"
        if not stored.exists():
            print(f"afterhours: no TWILIO_AUTH_TOKEN and no {stored}", file=sys.stderr)
            return 1
        auth_token = stored.read_text().strip()
    else:
        auth_token = token.reveal()
    engine_url = (args.url or f"http://{settings.host}:{settings.port}").rstrip("/")
    config = CallerConfig(engine_url, settings.public_url, auth_token, args.to, args.from_number)
    calls = 1 if args.command == "call" else args.calls
    concurrency = 1 if args.command == "call" else args.concurrency
    summaries = trio.run(_place_all, config, args.script, calls, concurrency)
    for summary in summaries:
        print(_line(summary))
    failed = [s for s in summaries if s.error or not s.twiml_ok]
    print(f"{len(summaries) - len(failed)} of {len(summaries)} calls connected")
    return 1 if failed else 0


async def _place_all(
    config: CallerConfig, script: str, calls: int, concurrency: int
) -> list[CallSummary]:
    limiter = trio.CapacityLimiter(max(1, concurrency))
    summaries: list[CallSummary] = []

    async def one() -> None:
        async with limiter:
            try:
                summaries.append(await place_call(config, script))
            except (OSError, trio.TooSlowError) as exc:
                summaries.append(CallSummary("-", error=f"{type(exc).__name__}: {exc}"))

    async with trio.open_nursery() as nursery:
        for _ in range(calls):
            nursery.start_soon(one)
    return summaries


def _line(summary: CallSummary) -> str:
    if summary.error:
        return f"{summary.call_sid}  failed: {summary.error}"
    first = summary.time_to_first_audio_ms
    return (
        f"{summary.call_sid}  heard {summary.heard_ms / 1000:.1f} s of audio, first after "
        f"{first} ms, {summary.marks_returned} marks played, ended by {summary.ended_by}"
    )
