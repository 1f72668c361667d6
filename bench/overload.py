"""Offered more calls than a core carries: are the admitted ones unharmed, and are the
others answered at once?

The same three processes as bench/calls.py (the engine pinned to CPU 0; the echoing
model and this load on CPU 1; Twilio's pace, marks returned at playback time). Callers
arrive at ``--ramp`` per second until ``--offered`` have called, which should be well over
what one core carries (bench/calls.py measures that: about 1.5x it). Each caller's
webhook is timed and its answer sorted: admitted (``<Connect><Stream>``: it then streams
for the rest of the run) or refused (the polite TwiML of a full engine). The admitted
calls' round trips are measured twice: while callers are still arriving against the
saturated engine (the ramp, from the first refusal on) and in a steady window after.

    .venv/bin/python -m bench.overload [--offered 225] [--ramp 20] [--window 20]
        [--database-url URL] [--no-pin]

Writes bench/results/overload.json and prints the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.calls import (
    GRACE_S,
    SETTLE_S,
    Caller,
    Window,
    cpu_seconds,
    engine_and_model,
    hang_up,
    lost_frames,
    model_sessions,
    open_call,
    pace,
    percentile,
    run_bench,
)
from bench.results_file import add_output_options, results_path

if TYPE_CHECKING:
    from pathlib import Path

WEBHOOK_TIMEOUT_S = 10.0


@dataclass
class Offer:
    caller: Caller
    webhook_s: float = 0.0
    outcome: str = "pending"  # admitted, refused, error


async def offer_call(url: str, offer: Offer, window: list[Window], callers: list[Caller]) -> None:
    """The signed webhook, timed; if admitted, the signed stream and ``start``."""
    offer.outcome, offer.webhook_s = await open_call(url, offer.caller, window)
    if offer.outcome == "admitted":
        callers.append(offer.caller)  # from now on the pacer sends its frames


def echo_figures(current: Window, lost: int) -> dict[str, Any]:
    latencies_ms = [s * 1000 for s in current.latencies_s]
    return {
        "window_s": round(current.end - current.start, 2),
        "samples": len(latencies_ms),
        "p50": round(percentile(latencies_ms, 0.50), 2),
        "p99": round(percentile(latencies_ms, 0.99), 2),
        "max": round(max(latencies_ms, default=0.0), 2),
        "lost_frames": lost,
    }


def webhook_figures(offers: list[Offer], outcome: str) -> dict[str, Any]:
    times_ms = [o.webhook_s * 1000 for o in offers if o.outcome == outcome]
    return {
        "calls": len(times_ms),
        "webhook_ms_p50": round(percentile(times_ms, 0.50), 1),
        "webhook_ms_p99": round(percentile(times_ms, 0.99), 1),
        "webhook_ms_max": round(max(times_ms, default=0.0), 1),
    }


async def bench(
    args: argparse.Namespace, database_url: str | None, workdir: Path
) -> dict[str, Any]:
    pin = args.pin and (os.cpu_count() or 1) >= 2
    # The engine's own admission settings (from the environment, else its defaults).
    async with engine_and_model(pin, database_url, workdir, {}) as processes:
        url, engine = processes.url, processes.engine
        print(f"engine at {url} (GET /stats shows its load and admission)", flush=True)
        window = [Window(start=time.perf_counter())]  # from the first refusal, below
        callers: list[Caller] = []
        offers: list[Offer] = []
        pacer = asyncio.create_task(pace(callers))
        tasks = []
        ramp_began_s = time.perf_counter()
        engine_before = cpu_seconds(engine.pid)
        for n in range(args.offered):
            offer = Offer(Caller(n))
            offers.append(offer)
            tasks.append(asyncio.create_task(offer_call(url, offer, window, callers)))
            await asyncio.sleep(max(0.0, ramp_began_s + (n + 1) / args.ramp - time.perf_counter()))
            refused_yet = any(o.outcome == "refused" for o in offers)
            if not refused_yet:  # the ramp window starts where the engine is full
                lost_frames(callers, Window(0.0, time.perf_counter()))
                window[0] = Window(start=time.perf_counter())
        await asyncio.gather(*tasks)
        ramp = window[0]
        ramp.end = time.perf_counter()
        ramp_cpu_share = (cpu_seconds(engine.pid) - engine_before) / (ramp.end - ramp_began_s)
        await asyncio.sleep(GRACE_S)
        ramp_lost = lost_frames(callers, ramp)
        await asyncio.sleep(SETTLE_S)
        lost_frames(callers, Window(0.0, time.perf_counter()))
        window[0] = steady = Window(start=time.perf_counter())
        engine_before = cpu_seconds(engine.pid)
        await asyncio.sleep(args.window)
        steady.end = time.perf_counter()
        steady_cpu_share = (cpu_seconds(engine.pid) - engine_before) / (steady.end - steady.start)
        await asyncio.sleep(GRACE_S)
        steady_lost = lost_frames(callers, steady)
        pacer.cancel()
        for caller in callers:
            await hang_up(caller)
        await asyncio.sleep(2.0)
        sessions = await model_sessions(processes.model_stats_port)
    return {
        "offered": args.offered,
        "ramp_calls_per_s": args.ramp,
        "admitted": webhook_figures(offers, "admitted"),
        "refused": webhook_figures(offers, "refused"),
        "errors": [o.caller.error for o in offers if o.outcome == "error"][:5],
        "errors_total": sum(1 for o in offers if o.outcome == "error"),
        "admitted_echo_during_ramp_ms": echo_figures(ramp, ramp_lost),
        "admitted_echo_steady_ms": echo_figures(steady, steady_lost),
        "engine_cpu_share_ramp": round(ramp_cpu_share, 3),
        "engine_cpu_share_steady": round(steady_cpu_share, 3),
        "model_sessions_open_after_hang_up": sessions["sessions_open"],
        "pinned": pin,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offered", type=int, default=225, help="callers offered in all")
    parser.add_argument("--ramp", type=float, default=20.0, help="new callers per second")
    parser.add_argument("--window", type=float, default=20.0, help="steady window, seconds")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    add_output_options(parser)
    args = parser.parse_args()
    results_path(args, "overload")
    result = run_bench(args, bench, "bench.overload")
    print(json.dumps(result, indent=2))
    print(f"wrote bench/results/{args.output}.json")


if __name__ == "__main__":
    main()
