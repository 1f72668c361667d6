"""How fast the store writes records, and how large a spool it replays.

1. Sustained writes: a producer pushes RECORDS store records (a realistic mix: per call an
   event, the call's start and end, and a function call) through the store's mailbox as
   fast as the mailbox takes them; the figure is records written per second until the
   last is in PostgreSQL.
2. Spool replay: SPOOL records are put in the spool (as an outage leaves them), then a
   store starts and replays them; the figure is records replayed per second.

Runs against a fresh embedded PostgreSQL (the engine's own, default settings) in a
temporary directory. Prints the figures and writes bench/results/store.json.

    .venv/bin/python -m bench.store_writes [--records 200000] [--spool 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import trio
import trio_asyncio

from actors.store.actor import StoreActor
from actors.store.spool import Spool
from bench.results_file import add_output_options, results_path
from engine.embedded_postgres import open_embedded_postgres
from engine.lifecycle import StopSignal
from engine.mailbox import Mailbox, OverflowPolicy
from engine.messages import CallUpdated, EventLogWritten, FunctionCallRecorded, StoreWrite

if TYPE_CHECKING:
    from collections.abc import Callable

START = datetime(2026, 11, 26, tzinfo=UTC)
POLL_S = 0.01


def records(first_call: int, count: int) -> list[StoreWrite]:
    out: list[StoreWrite] = []
    n = first_call
    while len(out) < count:
        when = START + timedelta(seconds=n)
        sid = f"CA{n:010d}"
        out += [
            CallUpdated(sid, project_id="acme", status="active", started_at=when),
            EventLogWritten(f"00000000-0000-4000-8000-{n:012d}", when, "info", "call", "x"),
            FunctionCallRecorded(
                f"00000000-0000-4000-9000-{n:012d}", sid, "get_slots", "ok", 40, when
            ),
            CallUpdated(sid, status="completed", ended_at=when, duration_s=60.0, cost_usd=0.1),
        ]
        n += 1
    return out[:count]


async def wait_for(condition: Callable[[], bool]) -> None:
    while not condition():
        await trio.sleep(POLL_S)


async def sustained(dsn: str, spool_dir: Path, count: int) -> float:
    inbox: Mailbox[StoreWrite] = Mailbox("store", 256, OverflowPolicy.BLOCK)
    store = StoreActor(dsn, inbox, spool_dir=spool_dir)
    batch = records(0, count)
    stop = StopSignal()
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run, stop)
        started = time.perf_counter()
        for record in batch:
            await inbox.send(record)
        await wait_for(lambda: store.statistics().records_written_total >= count)
        elapsed = time.perf_counter() - started
        stop.request()
    return count / elapsed


async def replay(dsn: str, spool_dir: Path, count: int) -> float:
    spool = Spool(spool_dir)
    spool.append(records(10_000_000, count))
    spool.close()
    inbox: Mailbox[StoreWrite] = Mailbox("store", 256, OverflowPolicy.BLOCK)
    store = StoreActor(dsn, inbox, spool_dir=spool_dir)
    stop = StopSignal()
    async with trio.open_nursery() as nursery:
        started = time.perf_counter()
        await nursery.start(store.run, stop)
        inbox.send_nowait(records(20_000_000, 1)[0])  # wakes the store: it replays first
        await wait_for(lambda: store.statistics().spool.pending_records == 0)
        elapsed = time.perf_counter() - started
        stop.request()
    return count / elapsed


async def main(record_count: int, spool_count: int) -> dict[str, object]:
    base = Path(tempfile.mkdtemp(prefix="afterhours-bench-", dir="/tmp"))
    base.chmod(0o755)
    try:
        async with trio_asyncio.open_loop(), open_embedded_postgres(base / "postgres") as pg:
            write_rate = await sustained(pg.dsn, base / "spool-a", record_count)
            replay_rate = await replay(pg.dsn, base / "spool-b", spool_count)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return {
        "command": f"python -m bench.store_writes --records {record_count} --spool {spool_count}",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "sustained_records_per_s": round(write_rate),
        "records": record_count,
        "spool_replayed_records": spool_count,
        "spool_replay_records_per_s": round(replay_rate),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--spool", type=int, default=100_000)
    add_output_options(parser)
    args = parser.parse_args()
    results = results_path(args, "store")
    result = trio.run(main, args.records, args.spool)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"sustained writes: {result['sustained_records_per_s']} records/s ({args.records} records)"
    )
    print(
        f"spool replay:     {result['spool_replay_records_per_s']} records/s ({args.spool} records)"
    )
    print(f"written to {results}")
