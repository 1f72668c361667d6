"""Admission by load: the load monitor's verdict from its samples (pure), and the whole
engine turning new callers away politely while its own thread is saturated, then taking
them again once it is not."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import trio
import trio.lowlevel

from actors.load import LoadMonitor
from engine.admission import Admission
from tests.helpers import running_engine, wait_until
from tests.test_bulkheads import metric
from tests.test_twilio_webhooks import ANSWERED, PROJECT, call, call_row, setup_project, twilio_post


def test_cpu_share_and_lag_come_from_the_window_of_samples() -> None:
    admission = Admission()
    monitor = LoadMonitor(
        max_cpu=0.85, max_loop_lag_s=0.03, tick_s=0.1, window_s=1.0, admission=admission
    )
    for n in range(11):  # one second at 0.5 s of CPU per second, timers 2 ms late
        reading = monitor.sample(n * 0.1, n * 0.05, 0.002)
    assert round(reading.cpu_share, 3) == 0.5
    assert reading.loop_lag_s == 0.002
    assert reading.overloaded is None
    assert admission.overloaded is None


def test_a_busy_second_turns_new_calls_away_until_load_falls_below_the_resume_share() -> None:
    admission = Admission()
    monitor = LoadMonitor(
        max_cpu=0.8, max_loop_lag_s=1.0, tick_s=0.1, window_s=1.0, admission=admission
    )
    cpu_s = 0.0
    verdicts = []
    for n, share in enumerate([0.5] * 10 + [0.95] * 10 + [0.75] * 10 + [0.6] * 10):
        cpu_s += share * 0.1
        verdicts.append(monitor.sample((n + 1) * 0.1, cpu_s, 0.0).overloaded)
    assert verdicts[9] is None
    assert verdicts[19] == "cpu"  # a second at 95 %
    assert verdicts[29] == "cpu"  # 75 %: under the limit but above 90 % of it, still out
    assert verdicts[39] is None  # 60 %: back
    assert admission.overloaded is None


def test_a_cpu_limit_of_one_core_is_no_cpu_limit() -> None:
    monitor = LoadMonitor(max_cpu=1.0, max_loop_lag_s=10.0, tick_s=0.1, window_s=1.0)
    for n in range(11):  # projected well past a core: ten calls joined, one older
        reading = monitor.sample(n * 0.1, n * 0.1, 0.0, calls=1 if n == 0 else 11)
    assert reading.projected_cpu_share > 1.0
    assert reading.overloaded is None


def test_the_calls_that_just_joined_are_charged_what_the_older_ones_cost() -> None:
    monitor = LoadMonitor(max_cpu=0.85, max_loop_lag_s=10.0, tick_s=0.1, window_s=1.0)
    for n in range(31):  # 50 calls, then 40 more in the last 3 s at 0.4 of a core
        reading = monitor.sample(n * 0.1, n * 0.04, 0.0, calls=50 if n == 0 else 90)
    assert round(reading.cpu_share, 3) == 0.4
    assert round(reading.projected_cpu_share, 3) == 0.72  # 0.4 for 50 calls, times 90/50
    assert reading.overloaded is None
    ramping = LoadMonitor(max_cpu=0.85, max_loop_lag_s=10.0, tick_s=0.1, window_s=1.0)
    for n in range(31):  # 10 calls, then 60 more at once: their cost has not shown yet
        reading = ramping.sample(n * 0.1, n * 0.02, 0.0, calls=10 if n == 0 else 70)
    assert round(reading.cpu_share, 3) == 0.2
    assert reading.overloaded == "cpu"  # 0.2 for 10 calls: 1.4 for 70


def test_timer_lag_alone_is_an_overload() -> None:
    monitor = LoadMonitor(max_cpu=1.0, max_loop_lag_s=0.03)
    monitor.sample(0.0, 0.0, 0.0)
    assert monitor.sample(0.1, 0.01, 0.2).overloaded == "loop_lag"


async def test_a_saturated_engine_turns_new_callers_away_politely_and_takes_them_after(
    fresh_database: str, tmp_path: Path
) -> None:
    """The engine's own thread kept busy (as a core past saturation is): the caller is
    answered at once with the on-call dial, recorded missed with its project; once the
    load is gone, callers are answered by the engine again."""
    refused_sid = "CA" + secrets.token_hex(16)
    limits = {"ADMIT_MAX_CPU": "0.85", "ADMIT_MAX_LOOP_LAG_S": "0.04"}  # the defaults
    async with running_engine(fresh_database, tmp_path, **limits) as engine:
        await setup_project(engine)
        busy_until_s = trio.current_time() + 2.5

        # 60 ms of CPU at a time, with a checkpoint between: past the lag limit (40 ms)
        # whatever else the machine runs. (15 ms spins overloaded only an idle machine: on
        # a busy one the process gets 2/3 of a core, under the CPU limit, and a 15 ms lag
        # is under the lag limit, so the engine rightly took the call.)
        async def hog() -> None:
            while trio.current_time() < busy_until_s:
                spin_until = time.perf_counter() + 0.06
                while time.perf_counter() < spin_until:
                    pass
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hog)
            await trio.sleep(1.5)  # a second of samples at ~100 % CPU
            began_s = trio.current_time()
            refused = await twilio_post(engine, "/twilio/voice", call(refused_sid, ANSWERED))
            refused_after_s = trio.current_time() - began_s

        async def streamed() -> bytes:
            sid = "CA" + secrets.token_hex(16)
            twiml = (await twilio_post(engine, "/twilio/voice", call(sid, ANSWERED))).body
            return twiml if b"<Stream" in twiml else b""

        answered = await wait_until(streamed, timeout_s=10)
        record = await call_row(fresh_database, refused_sid, until="missed")
        by_cpu = await metric(
            engine, "afterhours_refusals_total", edge="voice", reason="engine_overloaded_cpu"
        )
        by_lag = await metric(
            engine, "afterhours_refusals_total", edge="voice", reason="engine_overloaded_loop_lag"
        )
    assert b"<Dial" in refused.body
    assert PROJECT["onCallNumber"].encode() in refused.body
    # At once, by Twilio's measure (it waits 15 s for a webhook): within 3 s even on a
    # machine whose cores two CPU hogs share with the engine and its in-process spinner.
    assert refused_after_s < 3.0
    assert (record["end_reason"], record["project_id"]) == ("engine_overloaded", "smith-plumbing")
    assert b"<Connect><Stream" in answered
    assert by_cpu + by_lag >= 1  # this caller, and those the engine turned away after
