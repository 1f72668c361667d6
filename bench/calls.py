"""CPU per call-second and audio latency with N concurrent calls through the engine.

Three processes, as in production the engine shares nothing with its peers:
- the engine (``afterhours serve``), pointed at the simulated model as it would point at
  OpenAI (OPENAI_API_KEY set, OPENAI_REALTIME_URL to the simulator);
- the simulated Realtime model in echo mode (bench/model_process.py): every
  ``input_audio_buffer.append`` comes straight back as one ``response.output_audio.delta``;
- this process: N simulated Twilio callers through the real path (signed webhook, TwiML,
  signed media stream, ``start``), each sending a 20 ms mu-law frame every 20 ms, paced
  by the clock, and playing every mark back at once (as Twilio does when audio is heard).

Figures, over a steady window after every call is up:
- engine CPU seconds (user + system, from /proc) per call-second, and as % of one core;
- echo latency: a caller frame's send to its echo arriving back at the caller, through the
  engine twice (caller -> engine -> model -> engine -> caller), p50/p95/p99/max;
- time to first audio (the greeting) per call, as the engine recorded it.

    .venv/bin/python -m bench.calls [--calls 20] [--seconds 30] [--database-url URL]

With --database-url (a server URL; BENCH_DATABASE_URL by default) the run gets a fresh
database there, dropped afterwards; without it the engine uses its embedded PostgreSQL in
a temporary DATA_DIR.
Prints the figures and writes bench/results/calls-<N>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import trio
from twilio.request_validator import RequestValidator

from engine.ws import WebSocket, WebSocketClosed, connect

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
ADMIN_TOKEN = "bench-admin-token-0123456789"  # noqa: S105 -- a throwaway local engine
AUTH_TOKEN = "bench-twilio-auth-token"  # noqa: S105 -- a throwaway local engine
NUMBER = "+15550300000"
FRAME_S = 0.020
FRAME_BYTES = 160
READY_DEADLINE_S = 90.0
RAMP_S = 3.0  # calls start spread over this, then the window begins after every call is up


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


@dataclass
class Caller:
    call_sid: str
    sent_at: dict[str, float] = field(default_factory=dict)  # payload -> send time
    latencies_s: list[float] = field(default_factory=list)
    frames_sent: int = 0
    echoes: int = 0
    error: str | None = None


async def start_model(nursery: trio.Nursery) -> tuple[str, trio.Process]:
    """The echoing simulated model in its own process; its first stdout line is its URL."""
    process: trio.Process = await nursery.start(
        partial(
            trio.run_process,
            [sys.executable, "-m", "bench.model_process"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=False,
        )
    )
    assert process.stdout is not None
    line = b""
    with trio.fail_after(30):
        while not line.endswith(b"\n"):
            line += await process.stdout.receive_some(1)
    return line.decode().strip(), process


async def wait_ready(url: str, process: trio.Process) -> None:
    async with httpx.AsyncClient(timeout=1) as http:
        with trio.fail_after(READY_DEADLINE_S):
            while True:
                if process.returncode is not None:
                    raise SystemExit(f"engine exited with {process.returncode}")
                try:
                    if (await http.get(f"{url}/health")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await trio.sleep(0.1)


async def setup_project(url: str) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    project = {
        "id": "bench",
        "name": "Bench Plumbing",
        "timezone": "UTC",
        "max_call_s": 7200,
        "silence_timeout_s": 600,
    }
    async with httpx.AsyncClient(timeout=10, headers=headers) as http:
        created = await http.post(f"{url}/admin/projects", json=project)
        assert created.status_code == 201, created.text
        added = await http.post(
            f"{url}/admin/projects/bench/phone-numbers", json={"number": NUMBER}
        )
        assert added.status_code == 201, added.text


async def run_caller(
    url: str, caller: Caller, up: trio.Event, stop_at: list[float], window: list[float]
) -> None:
    validator = RequestValidator(AUTH_TOKEN)
    form = {
        "CallSid": caller.call_sid,
        "AccountSid": "AC" + "0" * 32,
        "From": "+15550100000",
        "To": NUMBER,
        "CallStatus": "ringing",
        "Direction": "inbound",
    }
    # PUBLIC_URL is the engine's own loopback URL here: Twilio would sign over it.
    headers = {"X-Twilio-Signature": validator.compute_signature(f"{url}/twilio/voice", form)}
    async with httpx.AsyncClient(timeout=10) as http:
        twiml = (await http.post(f"{url}/twilio/voice", data=form, headers=headers)).text
    stream_url = twiml.split('<Stream url="', 1)[1].split('"', 1)[0]
    parameters = dict(re.findall(r'<Parameter name="(\w+)" value="([^"]*)" />', twiml))
    ws = await connect(
        stream_url,
        headers=[("X-Twilio-Signature", validator.compute_signature(stream_url, {}))],
        max_message_bytes=1 << 20,
        send_timeout_s=5,
        connect_timeout_s=10,
    )
    stream_sid = "MZ" + secrets.token_hex(16)
    start = {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": stream_sid,
        "start": {
            "streamSid": stream_sid,
            "callSid": caller.call_sid,
            "accountSid": "AC" + "0" * 32,
            "tracks": ["inbound"],
            "customParameters": parameters,
        },
    }
    await ws.send_text(json.dumps(start).encode())
    up.set()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen, ws, stream_sid, caller, window)
            await speak(ws, stream_sid, caller, stop_at)
            stop = {"event": "stop", "streamSid": stream_sid, "stop": {"callSid": caller.call_sid}}
            await ws.send_text(json.dumps(stop).encode())
            nursery.cancel_scope.cancel()
    except* (WebSocketClosed, trio.TooSlowError) as group:
        caller.error = str(group.exceptions[0])
    finally:
        await ws.aclose()


async def speak(ws: WebSocket, stream_sid: str, caller: Caller, stop_at: list[float]) -> None:
    """One frame every 20 ms on a fixed schedule (no drift); each payload is unique, so
    its echo can be matched to the moment it was sent."""
    next_s = trio.current_time()
    n = 0
    while trio.current_time() < stop_at[0]:
        n += 1
        tag = f"{caller.call_sid[-8:]}{n:08d}".encode()
        frame = (tag + b"\xff" * FRAME_BYTES)[:FRAME_BYTES]
        payload = base64.b64encode(frame).decode()
        media = {
            "event": "media",
            "streamSid": stream_sid,
            "media": {"track": "inbound", "chunk": str(n), "timestamp": str(n * 20),
                      "payload": payload},
        }  # fmt: skip
        caller.sent_at[payload] = time.perf_counter()
        await ws.send_text(json.dumps(media).encode())
        caller.frames_sent += 1
        next_s += FRAME_S
        await trio.sleep_until(next_s)


async def listen(ws: WebSocket, stream_sid: str, caller: Caller, window: list[float]) -> None:
    while True:
        for message in await ws.receive_batch():
            event = json.loads(message)
            kind = event["event"]
            if kind == "media":
                sent = caller.sent_at.pop(event["media"]["payload"], None)
                now = time.perf_counter()
                if sent is not None:
                    caller.echoes += 1
                    if window[0] <= sent <= window[1]:
                        caller.latencies_s.append(now - sent)
            elif kind == "mark":
                played = {"event": "mark", "streamSid": stream_sid, "mark": event["mark"]}
                await ws.send_text(json.dumps(played).encode())


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def bench(
    calls: int, seconds: float, database_url: str | None, workdir: Path
) -> dict[str, Any]:
    port, media_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    async with trio.open_nursery() as nursery:
        model_url, model = await start_model(nursery)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TWILIO_"))}
        env |= {
            "PYTHONPATH": str(ROOT),
            "PORT": str(port),
            "MEDIA_PORT": str(media_port),
            "DATA_DIR": str(workdir / "data"),
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "OPENAI_API_KEY": "sk-bench",
            "OPENAI_REALTIME_URL": model_url,
            "MAX_CONCURRENT_CALLS": str(max(100, calls)),
            "LOG_FORMAT": "text",
        }
        if database_url:
            env["DATABASE_URL"] = database_url
        else:
            env.pop("DATABASE_URL", None)
        engine: trio.Process = await nursery.start(
            partial(trio.run_process, [sys.executable, "-m", "api.cli", "serve"],
                    env=env, cwd=workdir, stdout=subprocess.DEVNULL,
                    stderr=(workdir / "engine.log").open("wb"), check=False)
        )  # fmt: skip
        await wait_ready(url, engine)
        await setup_project(url)
        callers = [Caller("CA" + secrets.token_hex(16)) for _ in range(calls)]
        stop_at = [float("inf")]
        window = [float("inf"), float("inf")]
        async with trio.open_nursery() as calling:
            ups = []
            for caller in callers:
                up = trio.Event()
                ups.append(up)
                calling.start_soon(run_caller, url, caller, up, stop_at, window)
                await trio.sleep(RAMP_S / calls)
            for up in ups:
                await up.wait()
            await trio.sleep(2.0)  # every greeting played, every session settled
            cpu_before, wall_before = cpu_seconds(engine.pid), time.perf_counter()
            window[0] = wall_before
            await trio.sleep(seconds)
            cpu_after, wall_after = cpu_seconds(engine.pid), time.perf_counter()
            window[1] = wall_after
            stop_at[0] = trio.current_time() + 1.0  # echoes of the window's last frames
        records = await read_records(url, [c.call_sid for c in callers])
        engine.send_signal(signal.SIGTERM)
        with trio.fail_after(60):
            await engine.wait()
        model.kill()
        nursery.cancel_scope.cancel()
    window_s = wall_after - wall_before
    cpu_s = cpu_after - cpu_before
    latencies_ms = [s * 1000 for c in callers for s in c.latencies_s]
    first_audio_ms = [
        r["time_to_first_audio_ms"] for r in records if r.get("time_to_first_audio_ms") is not None
    ]
    return {
        "calls": calls,
        "window_s": round(window_s, 2),
        "engine_cpu_s": round(cpu_s, 3),
        "engine_cpu_percent_of_one_core": round(100 * cpu_s / window_s, 1),
        "cpu_ms_per_call_second": round(1000 * cpu_s / (calls * window_s), 3),
        "frames_per_second_each_way": round(calls / FRAME_S),
        "echo_latency_ms": {
            "samples": len(latencies_ms),
            "p50": round(percentile(latencies_ms, 0.50), 2),
            "p95": round(percentile(latencies_ms, 0.95), 2),
            "p99": round(percentile(latencies_ms, 0.99), 2),
            "max": round(max(latencies_ms), 2),
        },
        "time_to_first_audio_ms": {
            "min": min(first_audio_ms),
            "max": max(first_audio_ms),
            "p50": percentile([float(v) for v in first_audio_ms], 0.5),
        },
        "frames_sent": sum(c.frames_sent for c in callers),
        "echoes_received": sum(c.echoes for c in callers),
        "caller_errors": [c.error for c in callers if c.error],
        "records": {
            status: sum(1 for r in records if r.get("status") == status)
            for status in ("completed", "failed", "active", "missed")
        },
    }


async def read_records(url: str, call_sids: list[str]) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    records: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=5, headers=headers) as http:
        for call_sid in call_sids:
            with trio.move_on_after(10):
                while True:
                    response = await http.get(f"{url}/admin/calls/{call_sid}")
                    if response.status_code == 200 and response.json()["status"] != "active":
                        records.append(response.json())
                        break
                    await trio.sleep(0.1)
    return records


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new database on ``server_url``'s server for this run, dropped afterwards."""
    name = f"afterhours_bench_{secrets.token_hex(6)}"

    async def execute(sql: str) -> None:
        connection = await asyncpg.connect(server_url, timeout=10)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(execute(f'CREATE DATABASE "{name}"'))
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    finally:
        asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="afterhours-bench-"))
    workdir.chmod(0o755)
    try:
        with contextlib.ExitStack() as stack:
            database_url = None
            if args.database_url:
                database_url = stack.enter_context(fresh_database(args.database_url))
            result = trio.run(bench, args.calls, args.seconds, database_url, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    result["command"] = f"python -m bench.calls --calls {args.calls} --seconds {args.seconds:g}"
    print(json.dumps(result, indent=2))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"calls-{args.calls}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
