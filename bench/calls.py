"""How many calls a core carries: a step load in echo mode through the whole engine.

Three processes, as in production the engine shares nothing with its peers:
- the engine (``afterhours serve``), pinned to CPU 0, pointed at the simulated model as
  it would point at OpenAI (OPENAI_API_KEY set, OPENAI_REALTIME_URL to the simulator);
- the simulated Realtime model in echo mode (bench/model_process.py), on CPU 1: every
  160 bytes of appended audio come straight back as one ``response.output_audio.delta``;
- this process, the load, on CPU 1: simulated Twilio callers through the real path
  (signed webhook, TwiML, signed media stream, ``start``); each sends a 160-byte frame
  every 20 ms on a fixed schedule (the calls' schedules spread over the 20 ms period),
  every frame unique (a marker) so its echo is matched to its send; received audio is
  "played" at real-time rate and each mark returned when its audio has played, as Twilio
  does.

For each level (calls kept up from one level to the next, new ones added) it waits for
the calls to settle, then measures a steady window: round trip (a frame's send to its
echo's arrival) p50/p95/p99/max, lost frames (sent in the window, never echoed within a
second), engine CPU ms per call-second and RSS per call (from /proc), and the load's and
the model's own CPU (so a run whose load saturates its core is visible). After the last
level every call hangs up and the model is asked how many sessions are still open (0 is
the only right answer). Time to first audio comes from the engine's own records.

    .venv/bin/python -m bench.calls [--levels 10,20,40,60,80,100] [--window 20]
        [--database-url URL] [--no-pin]

Writes bench/results/calls.json (and calls.png with matplotlib installed); prints a line
per level as it goes. ``afterhours bench calls`` runs the same.
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
import resource
import secrets
import shutil
import signal
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
import msgspec
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
SETTLE_S = 3.0  # after a level's calls are up, before its window
GRACE_S = 1.0  # an echo later than this after the window counts as lost
LEVELS = (10, 20, 40, 60, 80, 100)
_json = msgspec.json.Encoder()
_media_decoder = msgspec.json.Decoder(dict[str, Any])


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Window:
    start: float = float("inf")
    end: float = float("inf")
    latencies_s: list[float] = field(default_factory=list)


@dataclass
class Caller:
    index: int
    call_sid: str = field(default_factory=lambda: "CA" + secrets.token_hex(16))
    sent_at: dict[str, float] = field(default_factory=dict)  # payload -> perf_counter
    frames_sent: int = 0
    echoes: int = 0
    error: str | None = None
    up: trio.Event = field(default_factory=trio.Event)
    hang_up: trio.Event = field(default_factory=trio.Event)


def lost_frames(callers: list[Caller], window: Window) -> int:
    """Frames sent inside the window whose echo never came; forgets older ones."""
    lost = 0
    for caller in callers:
        for payload, sent in list(caller.sent_at.items()):
            if sent <= window.end:
                if sent >= window.start:
                    lost += 1
                del caller.sent_at[payload]
    return lost


async def run_caller(url: str, caller: Caller, window: list[Window], phase_s: float) -> None:
    validator = RequestValidator(AUTH_TOKEN)
    form = {
        "CallSid": caller.call_sid,
        "AccountSid": "AC" + "0" * 32,
        "From": "+15550100000",
        "To": NUMBER,
        "CallStatus": "ringing",
        "Direction": "inbound",
    }
    headers = {"X-Twilio-Signature": validator.compute_signature(f"{url}/twilio/voice", form)}
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            twiml = (await http.post(f"{url}/twilio/voice", data=form, headers=headers)).text
        stream_url = re.search(r'<Stream url="([^"]+)"', twiml)
        if stream_url is None:
            raise RuntimeError(f"turned away: {twiml[:120]}")
        parameters = dict(re.findall(r'<Parameter name="(\w+)" value="([^"]*)" />', twiml))
        ws = await connect(
            stream_url[1],
            headers=[("X-Twilio-Signature", validator.compute_signature(stream_url[1], {}))],
            max_message_bytes=1 << 20,
            send_timeout_s=5,
            connect_timeout_s=10,
        )
    except (OSError, httpx.HTTPError, RuntimeError, trio.TooSlowError) as exc:
        caller.error = f"{type(exc).__name__}: {exc}"
        caller.up.set()
        return
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
    try:
        await ws.send_text(_json.encode(start))
        caller.up.set()
        async with trio.open_nursery() as nursery:
            # Marks waiting for their audio to finish playing (10 s of audio at most).
            marks_in, marks_out = trio.open_memory_channel[tuple[float, bytes]](500)
            nursery.start_soon(listen, ws, stream_sid, caller, window, marks_in)
            nursery.start_soon(play_marks, ws, marks_out)
            await speak(ws, stream_sid, caller, phase_s)
            stop = {"event": "stop", "streamSid": stream_sid, "stop": {"callSid": caller.call_sid}}
            await ws.send_text(_json.encode(stop))
            nursery.cancel_scope.cancel()
    except* (WebSocketClosed, trio.TooSlowError) as group:
        caller.error = str(group.exceptions[0])
    finally:
        caller.up.set()
        await ws.aclose()


async def speak(ws: WebSocket, stream_sid: str, caller: Caller, phase_s: float) -> None:
    """A frame every 20 ms on a fixed schedule (no drift), until hung up."""
    next_s = trio.current_time() + phase_s
    n = 0
    prefix = (
        f'{{"event":"media","streamSid":"{stream_sid}","media":{{"track":"inbound","chunk":"'
    ).encode()
    while not caller.hang_up.is_set():
        await trio.sleep_until(next_s)
        n += 1
        tag = f"{caller.index:06d}{n:010d}".encode()
        payload = base64.b64encode((tag + b"\xff" * FRAME_BYTES)[:FRAME_BYTES]).decode()
        frame = prefix + f'{n}","timestamp":"{n * 20}","payload":"{payload}"}}}}'.encode()
        caller.sent_at[payload] = time.perf_counter()
        await ws.send_text(frame)
        caller.frames_sent += 1
        next_s += FRAME_S


async def listen(
    ws: WebSocket,
    stream_sid: str,
    caller: Caller,
    window: list[Window],
    marks: trio.MemorySendChannel[tuple[float, bytes]],
) -> None:
    """Echoes matched to their sends; audio "played" at real-time rate, each mark
    queued for return once the audio before it has played."""
    play_until = 0.0
    while True:
        for message in await ws.receive_batch():
            now = time.perf_counter()
            event = _media_decoder.decode(message)
            kind = event["event"]
            if kind == "media":
                payload = event["media"]["payload"]
                sent = caller.sent_at.pop(payload, None)
                if sent is not None:
                    caller.echoes += 1
                    current = window[0]
                    if current.start <= sent <= current.end:
                        current.latencies_s.append(now - sent)
                play_until = max(play_until, now) + FRAME_S
            elif kind == "mark":
                played = {"event": "mark", "streamSid": stream_sid, "mark": event["mark"]}
                marks.send_nowait((play_until, _json.encode(played)))


async def play_marks(ws: WebSocket, marks: trio.MemoryReceiveChannel[tuple[float, bytes]]) -> None:
    async for due, frame in marks:
        delay = due - time.perf_counter()
        if delay > 0:
            await trio.sleep(delay)
        await ws.send_text(frame)


async def model_sessions(stats_port: int) -> dict[str, int]:
    stream = await trio.open_tcp_stream("127.0.0.1", stats_port)
    async with stream:
        data = b""
        while not data.endswith(b"\n"):
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            data += chunk
    result: dict[str, int] = json.loads(data)
    return result


async def start_process(
    nursery: trio.Nursery, command: list[str], env: dict[str, str], cwd: Path, **io: Any
) -> trio.Process:
    process: trio.Process = await nursery.start(
        partial(trio.run_process, command, env=env, cwd=cwd, check=False, **io)
    )
    return process


async def read_lines(process: trio.Process, count: int) -> list[str]:
    assert process.stdout is not None
    data = b""
    with trio.fail_after(30):
        while data.count(b"\n") < count:
            data += await process.stdout.receive_some(1)
    return data.decode().splitlines()


async def wait_ready(url: str, process: trio.Process) -> None:
    async with httpx.AsyncClient(timeout=1) as http:
        with trio.fail_after(READY_DEADLINE_S):
            while True:
                if process.returncode is not None:
                    raise SystemExit(f"engine exited with {process.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{url}/health")).status_code == 200:
                        return
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
        (await http.post(f"{url}/admin/projects", json=project)).raise_for_status()
        added = await http.post(
            f"{url}/admin/projects/bench/phone-numbers", json={"number": NUMBER}
        )
        added.raise_for_status()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


async def bench(
    args: argparse.Namespace, database_url: str | None, workdir: Path
) -> dict[str, Any]:
    pin = args.pin and (os.cpu_count() or 1) >= 2
    engine_cpu, load_cpu = ["taskset", "-c", "0"], ["taskset", "-c", "1"]
    if pin:
        os.sched_setaffinity(0, {1})
    port, media_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    base_env = {**os.environ, "PYTHONPATH": str(ROOT)}
    async with trio.open_nursery() as nursery:
        model = await start_process(
            nursery,
            [*(load_cpu if pin else []), sys.executable, "-m", "bench.model_process"],
            base_env,
            ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        model_url, stats_port = await read_lines(model, 2)
        env = {k: v for k, v in base_env.items() if not k.startswith(("OPENAI_", "TWILIO_"))}
        env |= {
            "PORT": str(port),
            "MEDIA_PORT": str(media_port),
            "DATA_DIR": str(workdir / "data"),
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "OPENAI_API_KEY": "sk-bench",
            "OPENAI_REALTIME_URL": model_url,
            "MAX_CONCURRENT_CALLS": "1000",
        }
        env.pop("DATABASE_URL", None)
        if database_url:
            env["DATABASE_URL"] = database_url
        engine = await start_process(
            nursery,
            [*(engine_cpu if pin else []), sys.executable, "-m", "api.cli", "serve"],
            env,
            workdir,
            stdout=subprocess.DEVNULL,
            stderr=(workdir / "engine.log").open("wb"),
        )
        await wait_ready(url, engine)
        await setup_project(url)
        idle_rss = rss_bytes(engine.pid)
        window = [Window()]
        callers: list[Caller] = []
        levels = []
        async with trio.open_nursery() as calling:
            for level in args.levels:
                while len(callers) < level:
                    caller = Caller(len(callers))
                    callers.append(caller)
                    phase_s = (caller.index * 0.6180339887) % 1.0 * FRAME_S
                    calling.start_soon(run_caller, url, caller, window, phase_s)
                    await trio.sleep(0.02)
                for caller in callers:
                    await caller.up.wait()
                await trio.sleep(SETTLE_S)
                lost_frames(callers, Window(0.0, time.perf_counter()))  # forget the ramp
                window[0] = current = Window(start=time.perf_counter())
                engine_before, model_before = cpu_seconds(engine.pid), cpu_seconds(model.pid)
                load_before = own_cpu_seconds()
                await trio.sleep(args.window)
                current.end = time.perf_counter()
                engine_s = cpu_seconds(engine.pid) - engine_before
                model_s = cpu_seconds(model.pid) - model_before
                load_s = own_cpu_seconds() - load_before
                rss = rss_bytes(engine.pid)
                await trio.sleep(GRACE_S)
                lost = lost_frames(callers, current)
                window_s = current.end - current.start
                live = sum(1 for c in callers if c.error is None)
                latencies_ms = [s * 1000 for s in current.latencies_s]
                result = {
                    "calls": level,
                    "live_calls": live,
                    "window_s": round(window_s, 2),
                    "echo_ms": {
                        "samples": len(latencies_ms),
                        "p50": round(percentile(latencies_ms, 0.50), 2),
                        "p95": round(percentile(latencies_ms, 0.95), 2),
                        "p99": round(percentile(latencies_ms, 0.99), 2),
                        "max": round(max(latencies_ms, default=0.0), 2),
                    },
                    "lost_frames": lost,
                    "engine_cpu_ms_per_call_second": round(1000 * engine_s / (level * window_s), 2),
                    "engine_cpu_percent": round(100 * engine_s / window_s, 1),
                    "engine_rss_kb_per_call": round((rss - idle_rss) / level / 1024, 1),
                    "load_cpu_ms_per_call_second": round(1000 * load_s / (level * window_s), 2),
                    "model_cpu_ms_per_call_second": round(1000 * model_s / (level * window_s), 2),
                    "caller_errors": [c.error for c in callers if c.error][:5],
                }
                levels.append(result)
                echo = result["echo_ms"]
                engine_ms = result["engine_cpu_ms_per_call_second"]
                print(
                    f"{level:4d} calls: echo p50 {echo['p50']} p99 {echo['p99']} max "
                    f"{echo['max']} ms, lost {lost}, engine {engine_ms}"
                    f" ms/call-s ({result['engine_cpu_percent']} % of a core), "
                    f"{result['engine_rss_kb_per_call']} KB/call; load "
                    f"{result['load_cpu_ms_per_call_second']}, model "
                    f"{result['model_cpu_ms_per_call_second']} ms/call-s",
                    flush=True,
                )
            for caller in callers:
                caller.hang_up.set()
        await trio.sleep(2.0)
        sessions = await model_sessions(int(stats_port))
        first_audio = await first_audio_ms(url, [c.call_sid for c in callers])
        engine.send_signal(signal.SIGTERM)
        with trio.fail_after(60):
            await engine.wait()
        model.kill()
        nursery.cancel_scope.cancel()
    return {
        "levels": levels,
        "model_sessions_open_after_hang_up": sessions["sessions_open"],
        "model_sessions_total": sessions["sessions_total"],
        "time_to_first_audio_ms": first_audio,
        "pinned": pin,
    }


async def first_audio_ms(url: str, call_sids: list[str]) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    values: list[float] = []
    async with httpx.AsyncClient(timeout=5, headers=headers) as http:
        for call_sid in call_sids:
            with trio.move_on_after(5):
                while True:
                    response = await http.get(f"{url}/admin/calls/{call_sid}")
                    if response.status_code == 200 and response.json()["status"] != "active":
                        if response.json()["time_to_first_audio_ms"] is not None:
                            values.append(response.json()["time_to_first_audio_ms"])
                        break
                    await trio.sleep(0.1)
    return {
        "p50": percentile(values, 0.5),
        "p95": percentile(values, 0.95),
        "max": max(values, default=0.0),
        "calls": len(values),
    }


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


def chart(result: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    levels = result["levels"]
    calls = [level["calls"] for level in levels]
    figure, latency = plt.subplots(figsize=(8, 4.5))
    latency.plot(calls, [lv["echo_ms"]["p99"] for lv in levels], "o-", label="echo p99 (ms)")
    latency.plot(calls, [lv["echo_ms"]["p50"] for lv in levels], "o--", label="echo p50 (ms)")
    latency.set_xlabel("concurrent calls")
    latency.set_ylabel("round trip (ms)")
    cpu = latency.twinx()
    cpu.plot(
        calls,
        [lv["engine_cpu_ms_per_call_second"] for lv in levels],
        "s-",
        color="C3",
        label="engine CPU ms per call-second",
    )
    cpu.set_ylabel("CPU ms per call-second")
    figure.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--levels",
        default=",".join(map(str, LEVELS)),
        type=lambda text: [int(v) for v in text.split(",")],
    )
    parser.add_argument("--window", type=float, default=20.0, help="seconds per level")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    parser.add_argument("--output", default="calls", help="results file name (no suffix)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="afterhours-bench-"))
    workdir.chmod(0o755)
    try:
        with contextlib.ExitStack() as stack:
            database_url = None
            if args.database_url:
                database_url = stack.enter_context(fresh_database(args.database_url))
            result = trio.run(bench, args, database_url, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    result["command"] = "python -m bench.calls " + " ".join(sys.argv[1:])
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{args.output}.json").write_text(json.dumps(result, indent=2) + "\n")
    drawn = chart(result, RESULTS_DIR / f"{args.output}.png")
    print(json.dumps({k: v for k, v in result.items() if k != "levels"}, indent=2))
    print(f"wrote bench/results/{args.output}.json" + (" and .png" if drawn else ""))


if __name__ == "__main__":
    main()
