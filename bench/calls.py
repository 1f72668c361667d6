"""How many calls a core carries, the engine beside the simplest peer: a step load in
echo mode through each bridge, one after the other, in one run.

Three processes, as in production the bridge shares nothing with its peers:
- the bridge, pinned to CPU 0: the engine (``afterhours serve``, pointed at the simulated
  model as it would point at OpenAI: OPENAI_API_KEY set, OPENAI_REALTIME_URL to the
  simulator), or the peer (bench/peer_bridge.py, in the style of Twilio's public sample);
- the simulated Realtime model in echo mode (bench/model_process.py), on CPU 1: every
  160 bytes of appended audio come straight back as one ``response.output_audio.delta``;
  over TLS with ``--model-legs wss`` (a throwaway CA the bridge trusts);
- this process, the load, on CPU 1: simulated Twilio callers through the bridge's
  webhook and media stream (signed, as Twilio signs; Twilio's frames from
  engine/simulator/twilio_frames.py, as the simulated caller and the tests send them);
  each sends a 160-byte frame every 20 ms on a fixed schedule (the calls spread over 20
  slots of 1 ms), every frame unique (a marker) so its echo is matched to its send;
  received audio is "played" at real-time rate and each mark returned when its audio has
  played, as Twilio does. It runs on picows (a Cython WebSocket) over uvloop, with one
  pacing task for all callers, and reports its own CPU.

For each level (calls kept up from one level to the next, new ones added) it waits for
the calls to settle, then measures a steady window: round trip p50/p95/p99/max, lost
frames (sent in the window, never echoed within a second), the bridge's CPU ms per
call-second and RSS per call (from /proc), and the load's and the model's own CPU. A
bridge carries a level when every call connected, p99 < 50 ms and no frame was lost;
its run stops after the first level it does not carry (``--keep-going``: not). After
the last level every call hangs up and the model says how many sessions are still open.
Each repeat runs every bridge (and model leg) once, interleaved; the engine's CPU at each
level and the most calls carried are printed and stored as ratios of the peer's.

    .venv/bin/python -m bench.calls [--levels 40,80,120,160,200] [--window 20]
        [--repeats 3] [--bridges engine,peer] [--model-legs ws,wss]
        [--engine-env NAME=VALUE] [--database-url URL] [--no-pin] [--output NAME]

Writes bench/results/<output>.json (and .png with matplotlib installed); prints a line
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

from bench.results_file import RESULTS_DIR, add_output_options, no_chart_message, results_path
from engine.ports import free_port
from engine.simulator.twilio_frames import (
    ACCOUNT_SID,
    TwilioFrames,
    new_call_sid,
    new_stream_sid,
    stream_of,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine, Iterator

ROOT = Path(__file__).resolve().parents[1]
ADMIN_TOKEN = "bench-admin-token-0123456789"  # noqa: S105 -- a throwaway local engine
AUTH_TOKEN = "bench-twilio-auth-token"  # noqa: S105 -- a throwaway local engine
NUMBER = "+15550300000"
FRAME_S = 0.020
FRAME_BYTES = 160
READY_DEADLINE_S = 90.0
SETTLE_S = 3.0  # after a level's calls are up, before its window
GRACE_S = 1.0  # an echo later than this after the window counts as lost
LEVELS = (40, 80, 120, 150, 180, 210)
P99_BAR_MS = 50.0
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
    call_sid: str = field(default_factory=new_call_sid)
    sent_at: dict[bytes, float] = field(default_factory=dict)  # payload -> perf_counter
    frames_sent: int = 0
    echoes: int = 0
    error: str | None = None
    transport: Any = None
    frames: TwilioFrames | None = None  # once the stream is open
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
        elif kind == "mark" and caller.frames is not None:
            played = caller.frames.mark(event["mark"]["name"])
            delay = caller.play_until - now
            self.loop.call_later(max(0.0, delay), _send_if_open, transport, played)

    def on_ws_disconnected(self, transport: Any) -> None:
        self.closed.set()


def _send_if_open(transport: Any, data: bytes) -> None:
    if not transport.is_disconnected:
        transport.send(picows.WSMsgType.TEXT, data)


async def open_call(
    url: str, caller: Caller, window: list[Window], webhook_path: str = "/twilio/voice"
) -> tuple[str, float]:
    """Signed webhook, TwiML, signed media stream, ``start``. Returns how the webhook
    answered (``admitted``, ``refused``: the polite TwiML, or ``error``; why in
    ``caller.error``) and how long it took, in seconds. The peer bridge ignores the
    signatures; it is called the same way so both carry the same load."""
    validator = RequestValidator(AUTH_TOKEN)
    form = {
        "CallSid": caller.call_sid,
        "AccountSid": ACCOUNT_SID,
        "From": "+15550100000",
        "To": NUMBER,
        "CallStatus": "ringing",
        "Direction": "inbound",
    }
    webhook = f"{url}{webhook_path}"
    headers = {"X-Twilio-Signature": validator.compute_signature(webhook, form)}
    began_s = time.perf_counter()
    webhook_s = 0.0
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            twiml = (await http.post(webhook, data=form, headers=headers)).text
        webhook_s = time.perf_counter() - began_s
        stream = stream_of(twiml)
        if stream is None:
            caller.error = f"turned away: {twiml[:120]}"
            return ("refused" if "<Response>" in twiml else "error"), webhook_s
        signature = validator.compute_signature(stream.url, {})
        transport, _ = await picows.ws_connect(
            lambda: CallerListener(caller, window),
            stream.url,
            extra_headers={"X-Twilio-Signature": signature},
        )
    except (TimeoutError, OSError, httpx.HTTPError, picows.WSError) as exc:
        caller.error = f"{type(exc).__name__}: {exc}"
        return "error", webhook_s or time.perf_counter() - began_s
    caller.frames = TwilioFrames(new_stream_sid(), caller.call_sid)
    transport.send(picows.WSMsgType.TEXT, caller.frames.start(stream.parameters))
    caller.transport = transport
    return "admitted", webhook_s


def send_frame(caller: Caller) -> None:
    """One 160-byte frame with a unique marker; the time it left is kept. The frame's
    constant part is encoded once per stream (TwilioFrames.media): no JSON encoder here."""
    transport, frames = caller.transport, caller.frames
    if transport is None or frames is None or transport.is_disconnected:
        return
    tag = f"{caller.index:06d}{frames.chunks + 1:010d}".encode()
    payload = base64.b64encode((tag + b"\xff" * FRAME_BYTES)[:FRAME_BYTES])
    frame = frames.media(payload)
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
    transport, frames = caller.transport, caller.frames
    if transport is None or frames is None or transport.is_disconnected:
        return
    transport.send(picows.WSMsgType.TEXT, frames.stop())
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
    """The bench project and its number; already there (a database kept from an earlier
    run of this bench) is fine."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    project = {
        "id": "bench",
        "name": "Bench Plumbing",
        "timezone": "UTC",
        "maxCallS": 7200,
        "silenceTimeoutS": 600,
    }
    async with httpx.AsyncClient(timeout=10, headers=headers) as http:
        created = await http.post(f"{url}/admin/projects", json=project)
        if created.status_code != 409:
            created.raise_for_status()
        added = await http.post(
            f"{url}/admin/projects/bench/phone-numbers", json={"number": NUMBER}
        )
        if added.status_code != 409:
            added.raise_for_status()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


@dataclass
class Processes:
    url: str
    engine: Any  # the bridge's process: the engine, or the peer
    model: Any
    model_stats_port: int
    webhook_path: str = "/twilio/voice"


BRIDGES = ("engine", "peer")
MODEL_LEGS = ("ws", "wss")


async def start_model(pin: bool, env: dict[str, str], tls_dir: Path | None) -> tuple[Any, str, int]:
    """The echoing model on CPU 1; over TLS (``wss://``, a certificate from a throwaway
    CA whose PEM it writes to ``tls_dir/ca.pem``) when ``tls_dir`` is given."""
    tls = ["--tls-dir", str(tls_dir)] if tls_dir is not None else []
    model = await start_process(
        [*(["taskset", "-c", "1"] if pin else []), sys.executable, "-m", "bench.model_process",
         *tls],
        env,
        ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    model_url = (await model.stdout.readline()).decode().strip()
    stats_port = int((await model.stdout.readline()).decode())
    return model, model_url, stats_port


@contextlib.asynccontextmanager
async def engine_and_model(
    pin: bool,
    database_url: str | None,
    workdir: Path,
    settings: dict[str, str],
    *,
    bridge: str = "engine",
    model_leg: str = "ws",
) -> AsyncIterator[Processes]:
    """The echoing model (CPU 1) and the bridge (CPU 0) pointed at it, healthy: the
    engine (``afterhours serve``, with the bench project) or the peer
    (bench/peer_bridge.py); stopped (SIGTERM, then killed) afterwards. ``model_leg``
    ``wss``: the model over TLS, its test CA trusted by the bridge (``SSL_CERT_FILE``)."""
    if pin:
        os.sched_setaffinity(0, {1})
    port, media_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    base_env = {**os.environ, "PYTHONPATH": str(ROOT)}
    tls_dir = workdir / f"tls-{bridge}" if model_leg == "wss" else None
    if tls_dir is not None:
        tls_dir.mkdir(exist_ok=True)
    model, model_url, stats_port = await start_model(pin, base_env, tls_dir)
    env = {k: v for k, v in base_env.items() if not k.startswith(("OPENAI_", "TWILIO_"))}
    if tls_dir is not None:
        env["SSL_CERT_FILE"] = str(tls_dir / "ca.pem")
    pinned = ["taskset", "-c", "0"] if pin else []
    if bridge == "peer":
        command = [*pinned, sys.executable, "-m", "bench.peer_bridge", "--port", str(port),
                   "--model-url", model_url]  # fmt: skip
        webhook_path = "/incoming-call"
    else:
        env |= {
            "PORT": str(port),
            "MEDIA_PORT": str(media_port),
            "DATA_DIR": str(workdir / f"data-{port}"),  # a fresh one for every run
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
        command = [*pinned, sys.executable, "-m", "api.cli", "serve"]
        webhook_path = "/twilio/voice"
    log = (workdir / f"{bridge}.log").open("wb")
    engine = await start_process(command, env, workdir, stdout=subprocess.DEVNULL, stderr=log)
    try:
        await wait_ready(url, engine)
        if bridge == "engine":
            await setup_project(url)
        yield Processes(url, engine, model, stats_port, webhook_path)
    finally:
        engine.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(engine.wait(), 60)
        except TimeoutError:
            engine.kill()
        model.kill()
        await model.wait()
        log.close()


def carried(level: dict[str, Any]) -> bool:
    """A level the bridge carried: every call connected, p99 under 50 ms, no frame lost."""
    return bool(
        level["live_calls"] == level["calls"]
        and level["echo_ms"]["p99"] < P99_BAR_MS
        and level["lost_frames"] == 0
    )


async def measure_level(
    processes: Processes, callers: list[Caller], window: list[Window], level: int,
    window_s: float, idle_rss: int,
) -> dict[str, Any]:  # fmt: skip
    """Add calls up to ``level``, let them settle, measure one steady window."""
    engine, model = processes.engine, processes.model
    opening = []
    while len(callers) < level:
        caller = Caller(len(callers))
        callers.append(caller)
        opening.append(
            asyncio.create_task(open_call(processes.url, caller, window, processes.webhook_path))
        )
        await asyncio.sleep(0.02)
    await asyncio.gather(*opening)
    await asyncio.sleep(SETTLE_S)
    lost_frames(callers, Window(0.0, time.perf_counter()))  # forget the ramp
    window[0] = current = Window(start=time.perf_counter())
    engine_before, model_before = cpu_seconds(engine.pid), cpu_seconds(model.pid)
    load_before = own_cpu_seconds()
    await asyncio.sleep(window_s)
    current.end = time.perf_counter()
    engine_s = cpu_seconds(engine.pid) - engine_before
    model_s = cpu_seconds(model.pid) - model_before
    load_s = own_cpu_seconds() - load_before
    rss = rss_bytes(engine.pid)
    await asyncio.sleep(GRACE_S)
    lost = lost_frames(callers, current)
    measured_s = current.end - current.start
    latencies_ms = [s * 1000 for s in current.latencies_s]
    per_call_s = level * measured_s
    return {
        "calls": level,
        "live_calls": sum(1 for c in callers if c.error is None),
        "window_s": round(measured_s, 2),
        "echo_ms": {
            "samples": len(latencies_ms),
            "p50": round(percentile(latencies_ms, 0.50), 2),
            "p95": round(percentile(latencies_ms, 0.95), 2),
            "p99": round(percentile(latencies_ms, 0.99), 2),
            "max": round(max(latencies_ms, default=0.0), 2),
        },
        "lost_frames": lost,
        "engine_cpu_ms_per_call_second": round(1000 * engine_s / per_call_s, 2),
        "engine_cpu_percent": round(100 * engine_s / measured_s, 1),
        "engine_rss_kb_per_call": round((rss - idle_rss) / level / 1024, 1),
        "load_cpu_ms_per_call_second": round(1000 * load_s / per_call_s, 2),
        "model_cpu_ms_per_call_second": round(1000 * model_s / per_call_s, 2),
        "caller_errors": [c.error for c in callers if c.error][:5],
    }


async def one_run(
    args: argparse.Namespace, database_url: str | None, workdir: Path, bridge: str,
    model_leg: str,
) -> dict[str, Any]:  # fmt: skip
    """One bridge through the levels, fresh processes; after the first level it does
    not carry, the higher ones are skipped (``--keep-going`` measures them anyway)."""
    pin = args.pin and (os.cpu_count() or 1) >= 2
    # What a core carries is measured with nothing turned away: admission by load off
    # (bench/overload.py measures it on).
    settings = {"ADMIT_MAX_CPU": "1", "ADMIT_MAX_LOOP_LAG_S": "10", **args.engine_env}
    async with engine_and_model(
        pin, database_url, workdir, settings, bridge=bridge, model_leg=model_leg
    ) as processes:
        idle_rss = rss_bytes(processes.engine.pid)
        window = [Window()]
        callers: list[Caller] = []
        levels = []
        pacer = asyncio.create_task(pace(callers))
        for level in args.levels:
            result = await measure_level(processes, callers, window, level, args.window, idle_rss)
            levels.append(result)
            echo = result["echo_ms"]
            print(
                f"{bridge:>6} {model_leg:>3} {level:4d} calls: echo p50 {echo['p50']} p99 "
                f"{echo['p99']} max {echo['max']} ms, lost {result['lost_frames']}, "
                f"{result['engine_cpu_ms_per_call_second']} ms/call-s "
                f"({result['engine_cpu_percent']} % of a core), "
                f"{result['engine_rss_kb_per_call']} KB/call; load "
                f"{result['load_cpu_ms_per_call_second']}, model "
                f"{result['model_cpu_ms_per_call_second']} ms/call-s",
                flush=True,
            )
            if not carried(result) and not args.keep_going:
                break
        pacer.cancel()
        for caller in callers:
            await hang_up(caller)
        await asyncio.sleep(2.0)
        sessions = await model_sessions(processes.model_stats_port)
        first_audio = (
            await first_audio_ms(processes.url, [c.call_sid for c in callers])
            if bridge == "engine" else None
        )  # fmt: skip
    passing = [level["calls"] for level in levels if carried(level)]
    return {
        "bridge": bridge,
        "model_leg": model_leg,
        "engine_env": args.engine_env if bridge == "engine" else {},
        "levels": levels,
        "most_calls_carried": max(passing, default=0),
        "model_sessions_open_after_hang_up": sessions["sessions_open"],
        "model_sessions_total": sessions["sessions_total"],
        "time_to_first_audio_ms": first_audio,
        "pinned": pin,
    }


def cpu_at(run: dict[str, Any], calls: int) -> float | None:
    for level in run["levels"]:
        if level["calls"] == calls:
            value: float = level["engine_cpu_ms_per_call_second"]
            return value
    return None


def ratios(runs: list[dict[str, Any]], levels: list[int]) -> list[dict[str, Any]]:
    """The engine against the peer, repeat by repeat and leg by leg (the runs paired in
    the order they ran): CPU per call-second at each level both measured, and the most
    calls carried."""
    paired = []
    for leg in MODEL_LEGS:
        engines = [r for r in runs if r["bridge"] == "engine" and r["model_leg"] == leg]
        peers = [r for r in runs if r["bridge"] == "peer" and r["model_leg"] == leg]
        for repeat, (engine, peer) in enumerate(zip(engines, peers, strict=False), 1):
            cpu = {}
            for calls in levels:
                mine, theirs = cpu_at(engine, calls), cpu_at(peer, calls)
                if mine is not None and theirs:
                    cpu[str(calls)] = round(mine / theirs, 3)
            most = engine["most_calls_carried"], peer["most_calls_carried"]
            paired.append(
                {
                    "repeat": repeat,
                    "model_leg": leg,
                    "cpu_ratio_engine_to_peer": cpu,
                    "most_calls_carried": {"engine": most[0], "peer": most[1]},
                    "most_calls_ratio_engine_to_peer": round(most[0] / most[1], 3)
                    if most[1] else None,
                }
            )  # fmt: skip
    return paired


async def bench(
    args: argparse.Namespace, database_url: str | None, workdir: Path
) -> dict[str, Any]:
    """Every repeat runs each bridge (and each model leg) once, interleaved, so a drift
    of the machine falls on both alike."""
    runs = []
    for repeat in range(1, args.repeats + 1):
        for leg in args.model_legs:
            for bridge in args.bridges:
                print(f"-- repeat {repeat}: {bridge}, model over {leg}", flush=True)
                run = await one_run(args, database_url, workdir, bridge, leg)
                run["repeat"] = repeat
                runs.append(run)
    paired = ratios(runs, args.levels)
    for pair in paired:
        print(
            f"repeat {pair['repeat']} ({pair['model_leg']}): engine/peer CPU "
            f"{pair['cpu_ratio_engine_to_peer']}; most calls carried "
            f"{pair['most_calls_carried']} -> {pair['most_calls_ratio_engine_to_peer']}",
            flush=True,
        )
    return {
        "runs": runs,
        "ratios": paired,
        "load": "picows on uvloop, one pacing task for every caller",
        "carried_means": f"every call connected, echo p99 < {P99_BAR_MS:g} ms, no lost frame",
    }


async def first_audio_ms(url: str, call_sids: list[str]) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    values: list[float] = []
    async with httpx.AsyncClient(timeout=5, headers=headers) as http:
        for call_sid in call_sids:
            for _ in range(50):
                response = await http.get(f"{url}/admin/calls/{call_sid}")
                if response.status_code == 200 and response.json()["status"] != "active":
                    if response.json()["timeToFirstAudioMs"] is not None:
                        values.append(response.json()["timeToFirstAudioMs"])
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
    """Echo p99 and CPU per call-second against calls, one line per bridge and model leg
    (the first repeat), the legend outside the plot so it hides no point."""
    try:
        import matplotlib
        import matplotlib.ticker

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, (latency, cpu) = plt.subplots(1, 2, figsize=(11, 4.5))
    for run in result["runs"]:
        if run["repeat"] != 1:
            continue
        calls = [level["calls"] for level in run["levels"]]
        label = f"{run['bridge']} ({run['model_leg']})"
        latency.plot(calls, [lv["echo_ms"]["p99"] for lv in run["levels"]], "o-", label=label)
        cpu.plot(
            calls, [lv["engine_cpu_ms_per_call_second"] for lv in run["levels"]], "s-",
            label=label,
        )  # fmt: skip
    latency.axhline(P99_BAR_MS, color="grey", linestyle=":", label=f"{P99_BAR_MS:g} ms bar")
    latency.set_yscale("log")
    # Plain milliseconds on the log axis (not 6x10^0), and no labels on the minor ticks.
    latency.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    latency.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    latency.set_xlabel("concurrent calls")
    latency.set_ylabel("echo round trip p99 (ms)")
    cpu.set_xlabel("concurrent calls")
    cpu.set_ylabel("bridge CPU ms per call-second")
    handles, labels = latency.get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
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


def _choices(known: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        chosen = [v for v in text.split(",") if v]
        unknown = sorted(set(chosen) - set(known))
        if unknown or not chosen:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(known)}; not {unknown}")
        return chosen

    return parse


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
    add_output_options(parser)
    parser.add_argument(
        "--bridges", default=",".join(BRIDGES), type=_choices(BRIDGES),
        help="engine, peer or both (interleaved, in this order)",
    )  # fmt: skip
    parser.add_argument(
        "--model-legs", default="ws", type=_choices(MODEL_LEGS),
        help="ws, wss (the model over TLS, a throwaway CA) or both",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=1, help="rounds of every bridge and leg")
    parser.add_argument(
        "--engine-env", action="append", default=[], metavar="NAME=VALUE",
        help="a setting for the engine (repeatable), e.g. CALLER_FRAMES_PER_APPEND=2",
    )  # fmt: skip
    parser.add_argument(
        "--keep-going", action="store_true", help="measure levels past the first not carried"
    )
    args = parser.parse_args()
    args.engine_env = dict(item.split("=", 1) for item in args.engine_env)
    results_path(args, "calls")  # refused now, not after the run, if it would replace one
    result = run_bench(args, bench, "bench.calls")
    drawn = chart(result, RESULTS_DIR / f"{args.output}.png")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    print(f"wrote bench/results/{args.output}.json" + (" and .png" if drawn else ""))
    if not drawn:
        print(no_chart_message())


if __name__ == "__main__":
    main()
