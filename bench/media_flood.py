"""What a ping flood on the media port costs the engine: RSS before, during and after.

Starts the engine (``afterhours serve``, its own embedded PostgreSQL in a temporary
DATA_DIR unless ``--database-url``) with a project and a number, and records its RSS
when idle (after a warm-up of one flooder and one call, so what a first connection
imports is not counted as flood). Then, for each level, N sockets each do a signed
upgrade to the media port (a valid ``X-Twilio-Signature``, as an attacker who has one
stream URL's signature could) and flood WebSocket pings as fast as the kernel takes
them, never reading a byte (so never reading a pong). Meanwhile one simulated caller
places a real call through the webhook and the media stream. RSS is sampled every
100 ms during the flood; then every flooder is closed and, after a settle time, RSS is
read again. Also recorded: how long the engine took to close each flooder, what each
managed to send, the call's outcome, and the engine's
``afterhours_refusals_total{edge="media"}`` counters from /metrics. With
``--reconnect`` each flooder replaces a connection the engine closed at once, for the
whole flood (a sustained attack rather than one wave). As in bench.calls the engine is
pinned to CPU 0 and this process (flooders and caller) to CPU 1.

    .venv/bin/python -m bench.media_flood [--sockets 8,100] [--flood-s 10] [--settle-s 5]
        [--reconnect] [--database-url URL] [--no-pin] [--output media_flood]

Writes bench/results/<output>.json and prints a line per level. RSS is the kernel's
VmRSS: memory the process freed but CPython's allocator (or glibc's) kept is still
counted, so "after" is what the operator would see, not what Python is using.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio
from twilio.request_validator import RequestValidator

from bench.calls import fresh_database, rss_bytes
from bench.results_file import add_output_options, results_path
from engine.ports import free_port
from engine.simulator.caller import CallerConfig, place_call

ROOT = Path(__file__).resolve().parents[1]
ADMIN_TOKEN = "bench-admin-token-0123456789"  # noqa: S105 -- a throwaway local engine
AUTH_TOKEN = "bench-twilio-auth-token"  # noqa: S105 -- a throwaway local engine
NUMBER = "+15550300000"
READY_DEADLINE_S = 90.0
SAMPLE_S = 0.1
CONNECT_TIMEOUT_S = 5.0
# Masked, empty pings (6 bytes each): the cheapest frame a client can send, and each one
# asks the server for a pong.
PING = bytes([0x89, 0x80]) + b"\0\0\0\0"
PING_BLOCK = PING * (65536 // len(PING))


@dataclass
class Flooder:
    status: str = ""  # the last upgrade's status line
    connections: int = 0
    sent_bytes: int = 0
    # Per connection the engine closed: seconds from the upgrade to the first failed send.
    closed_after_s: list[float] = field(default_factory=list)
    error: str = ""


def flood(
    port: int, signature: str, stop: threading.Event, result: Flooder, reconnect: bool
) -> None:
    """One flooder (a thread, blocking sockets: the GIL is released while the kernel
    takes the bytes), until ``stop``; with ``reconnect``, a closed connection is
    replaced at once, as a determined attacker would."""
    while not stop.is_set():
        if not flood_once(port, signature, stop, result) or not reconnect:
            return


def flood_once(port: int, signature: str, stop: threading.Event, result: Flooder) -> bool:
    """One connection: signed upgrade, then pings until the engine closes it (``True``)
    or ``stop`` is set or it cannot connect (``False``)."""
    try:
        connection = socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT_S)
    except OSError as exc:
        result.error = f"connect: {exc}"
        return False
    with connection:
        result.connections += 1
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /twilio/media HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"X-Twilio-Signature: {signature}\r\n\r\n"
        )
        try:
            connection.sendall(request.encode())
            head = b""
            while b"\r\n\r\n" not in head:  # the response head only: then never read again
                byte = connection.recv(1)
                if not byte:
                    break
                head += byte
        except OSError as exc:
            result.error = f"upgrade: {exc}"
            return True  # refused (closed) by the engine
        result.status = head.split(b"\r\n", 1)[0].decode("latin-1")
        connection.settimeout(0.5)  # so that ``stop`` is seen while the kernel is full
        upgraded = time.perf_counter()
        while not stop.is_set():
            try:
                result.sent_bytes += connection.send(PING_BLOCK)
            except TimeoutError:
                continue
            except OSError as exc:
                result.closed_after_s.append(time.perf_counter() - upgraded)
                result.error = type(exc).__name__
                return True
    return False


def join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join()


async def wait_ready(url: str, process: trio.Process) -> None:
    async with httpx.AsyncClient(timeout=1) as http:
        deadline = trio.current_time() + READY_DEADLINE_S
        while trio.current_time() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"engine exited with {process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{url}/health")).status_code == 200:
                    return
            await trio.sleep(0.1)
    raise SystemExit("engine not healthy in time")


async def setup_project(url: str) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    project = {"id": "bench", "name": "Bench Plumbing", "timezone": "UTC"}
    async with httpx.AsyncClient(timeout=10, headers=headers) as http:
        (await http.post(f"{url}/admin/projects", json=project)).raise_for_status()
        number = {"number": NUMBER}
        (
            await http.post(f"{url}/admin/projects/bench/phone-numbers", json=number)
        ).raise_for_status()


async def media_refusals(url: str) -> dict[str, int]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(timeout=10, headers=headers) as http:
        text = (await http.get(f"{url}/metrics")).text
    pattern = r'afterhours_refusals_total\{edge="media",reason="(\w+)"\} (\d+)'
    # Every known reason is exported from the start at 0: report those that happened.
    return {reason: int(count) for reason, count in re.findall(pattern, text) if int(count)}


async def flood_level(
    count: int,
    media_port: int,
    signature: str,
    pid: int,
    config: CallerConfig,
    flood_s: float,
    reconnect: bool,
) -> dict[str, Any]:
    stop = threading.Event()
    flooders = [Flooder() for _ in range(count)]
    threads = [
        threading.Thread(
            target=flood, args=(media_port, signature, stop, f, reconnect), daemon=True
        )
        for f in flooders
    ]
    samples: list[int] = []
    call: dict[str, Any] = {"finished_during_flood": False}  # a call still going counts as lost

    async def sample() -> None:
        while True:
            samples.append(rss_bytes(pid))
            await trio.sleep(SAMPLE_S)

    async def one_call() -> None:
        await trio.sleep(1.0)  # the flood is under way
        summary = await place_call(config, "quick")
        call.update(
            finished_during_flood=True,
            ended_by=summary.ended_by,
            error=summary.error,
            heard_ms=summary.heard_ms,
            time_to_first_audio_ms=summary.time_to_first_audio_ms,
            marks_returned=summary.marks_returned,
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        for thread in threads:
            thread.start()
        nursery.start_soon(one_call)
        await trio.sleep(flood_s)
        nursery.cancel_scope.cancel()
    stop.set()
    await trio.to_thread.run_sync(join_all, threads)
    closed = sorted(after_s for f in flooders for after_s in f.closed_after_s)
    return {
        "sockets": count,
        "reconnect": reconnect,
        "flood_s": flood_s,
        "connections": sum(f.connections for f in flooders),
        "rss_peak_during_mb": round(max(samples) / 2**20, 1),
        "upgrades": sorted({f.status for f in flooders}),
        "closed_by_engine": len(closed),
        "closed_after_s": {
            "min": round(closed[0], 3),
            "median": round(closed[len(closed) // 2], 3),
            "max": round(closed[-1], 3),
        }
        if closed
        else None,
        "sent_bytes_per_socket": {
            "min": min(f.sent_bytes for f in flooders),
            "max": max(f.sent_bytes for f in flooders),
        },
        "errors": sorted({f.error for f in flooders if f.error})[:5],
        "call_during_flood": call,
    }


async def bench(
    args: argparse.Namespace, database_url: str | None, workdir: Path
) -> dict[str, Any]:
    # As in bench.calls: the engine on CPU 0, the flood and the caller on CPU 1, so the
    # figures are the engine's and not the load's (the flooders spin).
    pin = args.pin and (os.cpu_count() or 1) >= 2
    if pin:
        os.sched_setaffinity(0, {1})
    port, media_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TWILIO_"))}
    env |= {
        "PYTHONPATH": str(ROOT),
        "PORT": str(port),
        "MEDIA_PORT": str(media_port),
        "PUBLIC_URL": url,
        "DATA_DIR": str(workdir / "data"),
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
    }
    env.pop("DATABASE_URL", None)
    if database_url:
        env["DATABASE_URL"] = database_url
    with (workdir / "engine.log").open("wb") as log:
        engine = await trio.lowlevel.open_process(
            [*(["taskset", "-c", "0"] if pin else []), sys.executable, "-m", "api.cli", "serve"],
            env=env,
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    stream_url = f"ws://127.0.0.1:{media_port}/twilio/media"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(stream_url, {})
    config = CallerConfig(url, url, AUTH_TOKEN, NUMBER)
    try:
        await wait_ready(url, engine)
        await setup_project(url)
        # Warm-up: one call and one flooder, so the first use of each code path is paid.
        await flood_level(1, media_port, signature, engine.pid, config, 3.0, False)
        await trio.sleep(args.settle_s)
        levels = []
        for count in args.sockets:
            before = rss_bytes(engine.pid)
            level = await flood_level(
                count, media_port, signature, engine.pid, config, args.flood_s, args.reconnect
            )
            await trio.sleep(args.settle_s)
            after = rss_bytes(engine.pid)
            level = {
                "rss_before_mb": round(before / 2**20, 1),
                **level,
                "rss_after_mb": round(after / 2**20, 1),
                "settle_s": args.settle_s,
            }
            levels.append(level)
            print(
                f"{count:4d} sockets: RSS {level['rss_before_mb']} MB before, "
                f"{level['rss_peak_during_mb']} MB peak during, {level['rss_after_mb']} MB "
                f"after; {level['connections']} connections, {level['closed_by_engine']} "
                "closed by the engine "
                f"({level['closed_after_s']} s); call during it: {level['call_during_flood']}",
                flush=True,
            )
        refusals = await media_refusals(url)
    finally:
        engine.send_signal(signal.SIGTERM)
        with trio.move_on_after(60) as waited:
            await engine.wait()
        if waited.cancelled_caught:
            engine.kill()
            await engine.wait()
    return {"levels": levels, "media_refusals": refusals, "pinned": pin}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sockets", default="8,100", type=lambda text: [int(v) for v in text.split(",")]
    )
    parser.add_argument("--flood-s", type=float, default=10.0, help="seconds per level")
    parser.add_argument("--settle-s", type=float, default=5.0, help="after the flood, before RSS")
    parser.add_argument(
        "--reconnect", action="store_true", help="each flooder replaces a closed connection"
    )
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    add_output_options(parser)
    args = parser.parse_args()
    results = results_path(args, "media_flood")
    workdir = Path(tempfile.mkdtemp(prefix="afterhours-bench-"))
    workdir.chmod(0o755)  # the embedded PostgreSQL's user must traverse it
    try:
        with contextlib.ExitStack() as stack:
            database_url = None
            if args.database_url:
                database_url = stack.enter_context(fresh_database(args.database_url))
            result = trio.run(bench, args, database_url, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    result["command"] = "python -m bench.media_flood " + " ".join(sys.argv[1:])
    result["flood"] = f"signed upgrade, then masked empty pings ({len(PING)} bytes), never read" + (
        "; a closed connection is replaced at once" if args.reconnect else ""
    )
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["media_refusals"]))
    print(f"wrote bench/results/{args.output}.json")


if __name__ == "__main__":
    main()
