"""How many calls a core carries: a step load in echo mode through the whole engine.

Three processes, as in production the engine shares nothing with its peers:
- the engine (``afterhours serve``), pinned to CPU 0, pointed at the simulated model as
  it would point at OpenAI (OPENAI_API_KEY set, OPENAI_REALTIME_URL to the simulator);
- the simulated Realtime model in echo mode (bench/model_process.py), on CPU 1: every
  160 bytes of appended audio come straight back as one ``response.output_audio.delta``;
- this process, the load, on CPU 1: simulated Twilio callers through the real path
  (signed webhook, TwiML, signed media stream, ``start``); each sends a 160-byte frame
  every 20 ms on a fixed schedule (the calls spread over 20 slots of 1 ms), every frame
  unique (a marker) so its echo is matched to its send; received audio is "played" at
  real-time rate and each mark returned when its audio has played, as Twilio does. The
  load must cost much less than the engine or it measures itself: it runs on picows (a
  Cython WebSocket) over uvloop, with one pacing task for all callers, and reports its
  own CPU.

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
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import msgspec
import picows
import uvloop
from twilio.request_validator import RequestValidator

from bench.startup import free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine, Iterator

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
    sent_at: dict[bytes, float] = field(default_factory=dict)  # payload -> perf_counter
    frames_sent: int = 0
    echoes: int = 0
    error: str | None = None
    transport: Any = None
    stream_sid: str = ""
    frame_no: int = 0
    play_until: float = 0.0


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


class CallerListener(picows.WSListener):
    """One caller's media stream, as Twilio: echoes matched to their sends, audio
    "played" at real-time rate, each mark returned once the audio before it has played.
    picows parses frames in C and calls back synchronously: the load stays cheap."""

    def __init__(self, caller: Caller, window: list[Window]) -> None:
        super().__init__()
        self.caller = caller
        self.window = window
        self.loop = asyncio.get_running_loop()
        self.closed = asyncio.Event()

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        if frame.msg_type != picows.WSMsgType.TEXT:
            if frame.msg_type == picows.WSMsgType.CLOSE:
                transport.disconnect()
            return
        now = time.perf_counter()
        event = _media_decoder.decode(frame.get_payload_as_bytes())
        caller = self.caller
        kind = event["event"]
        if kind == "media":
            payload = event["media"]["payload"].encode()
            sent = caller.sent_at.pop(payload, None)
            if sent is not None:
                caller.echoes += 1
                current = self.window[0]
                if current.start <= sent <= current.end:
                    current.latencies_s.append(now - sent)
            caller.play_until = max(caller.play_until, now) + FRAME_S
        elif kind == "mark":
            played = _json.encode(
                {"event": "mark", "streamSid": caller.stream_sid, "mark": event["mark"]}
            )
            delay = caller.play_until - now
            self.loop.call_later(max(0.0, delay), _send_if_open, transport, played)

    def on_ws_disconnected(self, transport: Any) -> None:
        self.closed.set()


def _send_if_open(transport: Any, data: bytes) -> None:
    if not transport.is_disconnected:
        transport.send(picows.WSMsgType.TEXT, data)


async def open_call(url: str, caller: Caller, window: list[Window]) -> tuple[str, float]:
    """Signed webhook, TwiML, signed media stream, ``start``. Returns how the webhook
    answered (``admitted``, ``refused``: the polite TwiML, or ``error``; why in
    ``caller.error``) and how long it took, in seconds."""
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
    began_s = time.perf_counter()
    webhook_s = 0.0
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            twiml = (await http.post(f"{url}/twilio/voice", data=form, headers=headers)).text
        webhook_s = time.perf_counter() - began_s
        stream_url = re.search(r'<Stream url="([^"]+)"', twiml)
        if stream_url is None:
            caller.error = f"turned away: {twiml[:120]}"
            return ("refused" if "<Response>" in twiml else "error"), webhook_s
        parameters = dict(re.findall(r'<Parameter name="(\w+)" value="([^"]*)" />', twiml))
        signature = validator.compute_signature(stream_url[1], {})
        transport, _ = await picows.ws_connect(
            lambda: CallerListener(caller, window),
            stream_url[1],
            extra_headers={"X-Twilio-Signature": signature},
        )
    except (TimeoutError, OSError, httpx.HTTPError, picows.WSError) as exc:
        caller.error = f"{type(exc).__name__}: {exc}"
        return "error", webhook_s or time.perf_counter() - began_s
    caller.stream_sid = "MZ" + secrets.token_hex(16)
    start = {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": caller.stream_sid,
        "start": {
            "streamSid": caller.stream_sid,
            "callSid": caller.call_sid,
            "accountSid": "AC" + "0" * 32,
            "tracks": ["inbound"],
            "customParameters": parameters,
        },
    }
    transport.send(picows.WSMsgType.TEXT, _json.encode(start))
    caller.transport = transport
    return "admitted", webhook_s


def send_frame(caller: Caller) -> None:
    """One 160-byte frame with a unique marker; the time it left is kept."""
    transport = caller.transport
    if transport is None or transport.is_disconnected:
        return
    caller.frame_no += 1
    n = caller.frame_no
    tag = f"{caller.index:06d}{n:010d}".encode()
    payload = base64.b64encode((tag + b"\xff" * FRAME_BYTES)[:FRAME_BYTES])
    frame = (
        b'{"event":"media","streamSid":"'
        + caller.stream_sid.encode()
        + b'","media":{"track":"inbound","chunk":"'
        + str(n).encode()
        + b'","timestamp":"'
        + str(n * 20).encode()
        + b'","payload":"'
        + payload
        + b'"}}'
    )
    caller.sent_at[payload] = time.perf_counter()
    transport.send(picows.WSMsgType.TEXT, frame)
    caller.frames_sent += 1


async def pace(callers: list[Caller], slots: int = 20) -> None:
    """Every caller sends a frame every 20 ms; the calls are spread over 20 slots of
    1 ms (by index), and one task serves them all."""
    loop = asyncio.get_running_loop()
    slot_s = FRAME_S / slots
    next_s = loop.time()
    slot = 0
    while True:
        for caller in callers[slot::slots]:
            send_frame(caller)
        slot = (slot + 1) % slots
        next_s += slot_s
        await asyncio.sleep(max(0.0, next_s - loop.time()))


async def hang_up(caller: Caller) -> None:
    transport = caller.transport
    if transport is None or transport.is_disconnected:
        return
    stop = {"event": "stop", "streamSid": caller.stream_sid, "stop": {"callSid": caller.call_sid}}
    transport.send(picows.WSMsgType.TEXT, _json.encode(stop))
    transport.send_close(picows.WSCloseCode.OK)
    transport.disconnect()


async def model_sessions(stats_port: int) -> dict[str, int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", stats_port)
    data = await reader.readline()
    writer.close()
    result: dict[str, int] = json.loads(data)
    return result


async def start_process(command: list[str], env: dict[str, str], cwd: Path, **io: Any) -> Any:
    return await asyncio.create_subprocess_exec(*command, env=env, cwd=cwd, **io)


async def wait_ready(url: str, process: Any) -> None:
    async with httpx.AsyncClient(timeout=1) as http:
        deadline = time.monotonic() + READY_DEADLINE_S
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise SystemExit(f"engine exited with {process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{url}/health")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise SystemExit("engine not healthy in time")


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


@dataclass
class Processes:
    url: str
    engine: Any
    model: Any
    model_stats_port: int


@contextlib.asynccontextmanager
async def engine_and_model(
    pin: bool, database_url: str | None, workdir: Path, settings: dict[str, str]
) -> AsyncIterator[Processes]:
    """The echoing model (CPU 1) and the engine (``afterhours serve``, CPU 0) pointed at
    it, healthy, with the bench project; stopped (SIGTERM, then killed) afterwards."""
    if pin:
        os.sched_setaffinity(0, {1})
    port, media_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    base_env = {**os.environ, "PYTHONPATH": str(ROOT)}
    model = await start_process(
        [*(["taskset", "-c", "1"] if pin else []), sys.executable, "-m", "bench.model_process"],
        base_env,
        ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    model_url = (await model.stdout.readline()).decode().strip()
    stats_port = int((await model.stdout.readline()).decode())
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
        **settings,
    }
    env.pop("DATABASE_URL", None)
    if database_url:
        env["DATABASE_URL"] = database_url
    log = (workdir / "engine.log").open("wb")
    engine = await start_process(
        [*(["taskset", "-c", "0"] if pin else []), sys.executable, "-m", "api.cli", "serve"],
        env,
        workdir,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        await wait_ready(url, engine)
        await setup_project(url)
        yield Processes(url, engine, model, stats_port)
    finally:
        engine.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(engine.wait(), 60)
        except TimeoutError:
            engine.kill()
        model.kill()
        await model.wait()
        log.close()


async def bench(
    args: argparse.Namespace, database_url: str | None, workdir: Path
) -> dict[str, Any]:
    pin = args.pin and (os.cpu_count() or 1) >= 2
    # What a core carries is measured with nothing turned away: admission by load off
    # (bench/overload.py measures it on).
    admission_off = {"ADMIT_MAX_CPU": "1", "ADMIT_MAX_LOOP_LAG_S": "10"}
    async with engine_and_model(pin, database_url, workdir, admission_off) as processes:
        url, engine, model = processes.url, processes.engine, processes.model
        idle_rss = rss_bytes(engine.pid)
        window = [Window()]
        callers: list[Caller] = []
        levels = []
        pacer = asyncio.create_task(pace(callers))
        for level in args.levels:
            opening = []
            while len(callers) < level:
                caller = Caller(len(callers))
                callers.append(caller)
                opening.append(asyncio.create_task(open_call(url, caller, window)))
                await asyncio.sleep(0.02)
            await asyncio.gather(*opening)
            await asyncio.sleep(SETTLE_S)
            lost_frames(callers, Window(0.0, time.perf_counter()))  # forget the ramp
            window[0] = current = Window(start=time.perf_counter())
            engine_before, model_before = cpu_seconds(engine.pid), cpu_seconds(model.pid)
            load_before = own_cpu_seconds()
            await asyncio.sleep(args.window)
            current.end = time.perf_counter()
            engine_s = cpu_seconds(engine.pid) - engine_before
            model_s = cpu_seconds(model.pid) - model_before
            load_s = own_cpu_seconds() - load_before
            rss = rss_bytes(engine.pid)
            await asyncio.sleep(GRACE_S)
            lost = lost_frames(callers, current)
            window_s = current.end - current.start
            latencies_ms = [s * 1000 for s in current.latencies_s]
            per_call_s = level * window_s
            result = {
                "calls": level,
                "live_calls": sum(1 for c in callers if c.error is None),
                "window_s": round(window_s, 2),
                "echo_ms": {
                    "samples": len(latencies_ms),
                    "p50": round(percentile(latencies_ms, 0.50), 2),
                    "p95": round(percentile(latencies_ms, 0.95), 2),
                    "p99": round(percentile(latencies_ms, 0.99), 2),
                    "max": round(max(latencies_ms, default=0.0), 2),
                },
                "lost_frames": lost,
                "engine_cpu_ms_per_call_second": round(1000 * engine_s / per_call_s, 2),
                "engine_cpu_percent": round(100 * engine_s / window_s, 1),
                "engine_rss_kb_per_call": round((rss - idle_rss) / level / 1024, 1),
                "load_cpu_ms_per_call_second": round(1000 * load_s / per_call_s, 2),
                "model_cpu_ms_per_call_second": round(1000 * model_s / per_call_s, 2),
                "caller_errors": [c.error for c in callers if c.error][:5],
            }
            levels.append(result)
            echo = result["echo_ms"]
            print(
                f"{level:4d} calls: echo p50 {echo['p50']} p99 {echo['p99']} max "
                f"{echo['max']} ms, lost {lost}, engine "
                f"{result['engine_cpu_ms_per_call_second']} ms/call-s "
                f"({result['engine_cpu_percent']} % of a core), "
                f"{result['engine_rss_kb_per_call']} KB/call; load "
                f"{result['load_cpu_ms_per_call_second']}, model "
                f"{result['model_cpu_ms_per_call_second']} ms/call-s",
                flush=True,
            )
        pacer.cancel()
        for caller in callers:
            await hang_up(caller)
        await asyncio.sleep(2.0)
        sessions = await model_sessions(processes.model_stats_port)
        first_audio = await first_audio_ms(url, [c.call_sid for c in callers])
    return {
        "levels": levels,
        "model_sessions_open_after_hang_up": sessions["sessions_open"],
        "model_sessions_total": sessions["sessions_total"],
        "time_to_first_audio_ms": first_audio,
        "pinned": pin,
        "load": "picows on uvloop, one pacing task for every caller",
    }


async def first_audio_ms(url: str, call_sids: list[str]) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    values: list[float] = []
    async with httpx.AsyncClient(timeout=5, headers=headers) as http:
        for call_sid in call_sids:
            for _ in range(50):
                response = await http.get(f"{url}/admin/calls/{call_sid}")
                if response.status_code == 200 and response.json()["status"] != "active":
                    if response.json()["time_to_first_audio_ms"] is not None:
                        values.append(response.json()["time_to_first_audio_ms"])
                    break
                await asyncio.sleep(0.1)
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


def run_bench(
    args: argparse.Namespace,
    bench_fn: Callable[[argparse.Namespace, str | None, Path], Coroutine[Any, Any, dict[str, Any]]],
    command: str,
) -> dict[str, Any]:
    """Run ``bench_fn`` in a scratch directory (and a fresh database on
    ``--database-url``'s server, if given); write ``bench/results/<--output>.json``."""
    workdir = Path(tempfile.mkdtemp(prefix="afterhours-bench-"))
    workdir.chmod(0o755)
    try:
        with contextlib.ExitStack() as stack:
            database_url = None
            if args.database_url:
                database_url = stack.enter_context(fresh_database(args.database_url))
            result: dict[str, Any] = uvloop.run(bench_fn(args, database_url, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    result["command"] = f"python -m {command} " + " ".join(sys.argv[1:])
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{args.output}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


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
    result = run_bench(args, bench, "bench.calls")
    drawn = chart(result, RESULTS_DIR / f"{args.output}.png")
    print(json.dumps({k: v for k, v in result.items() if k != "levels"}, indent=2))
    print(f"wrote bench/results/{args.output}.json" + (" and .png" if drawn else ""))


if __name__ == "__main__":
    main()
