"""The simulated Realtime model in echo mode, alone in its process (for bench/calls.py):
prints its URL on the first line of stdout, then serves until killed."""

from __future__ import annotations

import sys

import trio

from engine.simulator.model import SimulatedModel


async def serve() -> None:
    model = SimulatedModel(echo=True)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(model.serve)
        sys.stdout.write(url + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    trio.run(serve)
