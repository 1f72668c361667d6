"""The simulated Realtime model in echo mode, alone in its process (for bench/calls.py).

Prints its WebSocket URL on the first line of stdout and a statistics port on the
second; a TCP connection to that port gets one JSON line (sessions open and total, so
the benchmark can check that no model session outlives its call), then serves until
killed."""

from __future__ import annotations

import sys
from functools import partial

import msgspec
import trio

from engine.simulator.model import SimulatedModel


async def serve() -> None:
    model = SimulatedModel(echo=True)

    async def stats(stream: trio.SocketStream) -> None:
        async with stream:
            line = msgspec.json.encode(
                {
                    "sessions_open": model.stats.sessions_open,
                    "sessions_total": model.stats.sessions_total,
                }
            )
            await stream.send_all(line + b"\n")

    async with trio.open_nursery() as nursery:
        url = await nursery.start(model.serve)
        listeners = await nursery.start(partial(trio.serve_tcp, stats, 0, host="127.0.0.1"))
        sys.stdout.write(f"{url}\n{listeners[0].socket.getsockname()[1]}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    trio.run(serve)
