"""What a Trio wake-up costs over the system calls it serves, for the "one poller for
all sockets" question (docs/performance.md, "The lean hot path").

40 socket pairs stand for 40 calls; each round the driver writes one 200-byte message
into every pair, and each message is read and forwarded (one write) by:
- ``tasks``: one Trio task per socket, ``wait_readable`` then ``read(2)``, as the call
  actor's readers do;
- ``poller``: one Trio task waiting on a private epoll for all sockets, handling each
  ready one synchronously;
- ``syscalls``: no Trio at all, the same reads and writes in a loop (the floor).
Prints CPU microseconds per message for each and writes bench/results/wakeups.json.

    .venv/bin/python -m bench.wakeups [--rounds 3000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import socket
import time

import trio
import trio.lowlevel

from bench.results_file import add_output_options, results_path

CALLS = 40
MESSAGE = b"y" * 200


Pairs = list[tuple[socket.socket, socket.socket]]


def _pairs() -> tuple[Pairs, Pairs]:
    inbound = [socket.socketpair() for _ in range(CALLS)]
    outbound = [socket.socketpair() for _ in range(CALLS)]
    for a, b in inbound + outbound:
        a.setblocking(False)
        b.setblocking(False)
    return inbound, outbound


async def _drive(inbound: Pairs, outbound: Pairs, rounds: int) -> float:
    began = time.process_time()
    for _ in range(rounds):
        for writer, _reader in inbound:
            os.write(writer.fileno(), MESSAGE)
        await trio.lowlevel.checkpoint()  # the forwarders run
        for _writer, reader in outbound:
            with contextlib.suppress(BlockingIOError):
                os.read(reader.fileno(), 65536)
    return time.process_time() - began


async def tasks(rounds: int) -> float:
    inbound, outbound = _pairs()

    async def forward(source: socket.socket, sink: socket.socket) -> None:
        while True:
            await trio.lowlevel.wait_readable(source)
            os.read(source.fileno(), 65536)
            os.write(sink.fileno(), MESSAGE)

    async with trio.open_nursery() as nursery:
        for (_, source), (sink, _) in zip(inbound, outbound, strict=True):
            nursery.start_soon(forward, source, sink)
        await trio.sleep(0.01)
        spent = await _drive(inbound, outbound, rounds)
        nursery.cancel_scope.cancel()
    return spent


async def poller(rounds: int) -> float:
    inbound, outbound = _pairs()
    epoll = select.epoll()
    sinks = {}
    for (_, source), (sink, _) in zip(inbound, outbound, strict=True):
        epoll.register(source.fileno(), select.EPOLLIN)
        sinks[source.fileno()] = sink.fileno()

    async def poll() -> None:
        while True:
            await trio.lowlevel.wait_readable(epoll.fileno())
            for fd, _ in epoll.poll(0):
                os.read(fd, 65536)
                os.write(sinks[fd], MESSAGE)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        await trio.sleep(0.01)
        spent = await _drive(inbound, outbound, rounds)
        nursery.cancel_scope.cancel()
    epoll.close()
    return spent


async def syscalls(rounds: int) -> float:
    inbound, outbound = _pairs()
    began = time.process_time()
    for _ in range(rounds):
        for (writer, source), (sink, reader) in zip(inbound, outbound, strict=True):
            os.write(writer.fileno(), MESSAGE)
            os.read(source.fileno(), 65536)
            os.write(sink.fileno(), MESSAGE)
            os.read(reader.fileno(), 65536)
        await trio.lowlevel.checkpoint()
    return time.process_time() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3000)
    add_output_options(parser)
    args = parser.parse_args()
    results = results_path(args, "wakeups")
    result = {}
    for name, variant in (("tasks", tasks), ("poller", poller), ("syscalls", syscalls)):
        spent_s = trio.run(variant, args.rounds)
        result[name] = round(spent_s * 1e6 / (CALLS * args.rounds), 2)
        print(f"{name:9s} {result[name]:6.2f} us of CPU per message (driver included)")
    results.write_text(json.dumps({"us_per_message": result, "command":
        f"python -m bench.wakeups --rounds {args.rounds}"}, indent=2) + "\n")  # fmt: skip
    print(f"written to {results}")


if __name__ == "__main__":
    main()
