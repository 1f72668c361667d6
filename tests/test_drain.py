"""The graceful drain with simulated calls in progress: they finish, new callers are
turned away politely, every record is final, and the engine then stops by itself; a call
still live when the drain runs out is ended with a goodbye the caller hears."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from engine.simulator.caller import CallerConfig, CallSummary, place_call
from tests.helpers import (
    ADMIN_TOKEN,
    PUBLIC_URL,
    TWILIO_AUTH_TOKEN,
    http_request,
    running_engine,
    sid,
)
from tests.test_call_e2e import wait_for_final
from tests.test_simulated_caller import final_rows
from tests.test_twilio_webhooks import ANSWERED, call, twilio_post

ON_CALL = "+15551234567"


async def add_project(base: str) -> None:
    project = {"id": "smith-plumbing", "name": "Smith Plumbing", "timezone": "UTC",
               "onCallNumber": ON_CALL}  # fmt: skip
    created = await http_request("POST", f"{base}/admin/projects", json=project, token=ADMIN_TOKEN)
    assert created.status == 201, created.body
    added = await http_request(
        "POST", f"{base}/admin/projects/smith-plumbing/phone-numbers",
        json={"number": ANSWERED}, token=ADMIN_TOKEN,
    )  # fmt: skip
    assert added.status == 201, added.body


async def test_a_drain_lets_live_calls_finish_and_turns_new_ones_away(
    fresh_database: str, tmp_path: Path
) -> None:
    summaries: list[CallSummary] = []
    async with running_engine(
        fresh_database, tmp_path, MEDIA_PORT="0", DRAIN_TIMEOUT_S="30"
    ) as engine:
        base = engine.bound_urls[0]
        await add_project(base)
        config = CallerConfig(base, PUBLIC_URL, TWILIO_AUTH_TOKEN, ANSWERED)

        async def one() -> None:
            summaries.append(await place_call(config, "conversation"))

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(one)
                while engine.calls.statistics().active < 3:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                engine.drain.begin()  # what the first SIGTERM does
                health = await http_request("GET", f"{base}/health")
                turned_away = await twilio_post(engine, "/twilio/voice", call(sid(600), ANSWERED))
                assert engine.calls.statistics().active == 3  # nobody was cut off
            await engine.stop.wait()  # the drain ended by itself once the calls had
            rows = await final_rows(fresh_database, expected=3)
            late = await wait_for_final(fresh_database, sid(600))
    assert (health.status, health.json()["status"]) == (503, "draining")
    assert f'<Dial timeout="30">{ON_CALL}</Dial>' in turned_away.body.decode()
    assert "<Stream" not in turned_away.body.decode()
    assert (late["status"], late["end_reason"]) == ("missed", "engine_draining")
    assert [s.ended_by for s in summaries] == ["caller"] * 3
    assert [s.status_callback_error for s in summaries] == [None] * 3  # the API was still up
    for row in rows:
        assert (row["status"], row["twilio_status"]) == ("completed", "completed")
        assert [t["role"] for t in json.loads(row["transcript"])][:3] == [
            "assistant", "caller", "assistant",
        ]  # fmt: skip


async def test_a_call_still_live_when_the_drain_runs_out_hears_a_goodbye(
    fresh_database: str, tmp_path: Path
) -> None:
    summary: list[CallSummary] = []
    async with running_engine(
        fresh_database, tmp_path, MEDIA_PORT="0", DRAIN_TIMEOUT_S="1"
    ) as engine:
        base = engine.bound_urls[0]
        await add_project(base)
        config = CallerConfig(base, PUBLIC_URL, TWILIO_AUTH_TOKEN, ANSWERED)

        async def one() -> None:
            summary.append(await place_call(config, "silent"))  # would stay 12 s

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(one)
                while engine.calls.statistics().active < 1:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                await trio.sleep(1.0)  # the greeting has played
                engine.drain.begin()
            record: dict[str, Any] = await wait_for_final(fresh_database, summary[0].call_sid)
    assert summary[0].ended_by == "engine"
    assert (record["status"], record["end_reason"]) == ("completed", "engine_stopping")
    said = [t["text"] for t in json.loads(record["transcript"]) if t["role"] == "assistant"]
    assert said[-1] == (
        "I am sorry, I have to end our call now. Please call back in a few minutes. Goodbye."
    )
    assert record["duration_s"] < 10  # the hang-up came once the goodbye was heard


async def _stopped_after_s(ended_before_s: float | None, live: int) -> float:
    """How long after its begin the drain requests the stop, with ``live`` calls (a real
    calls group's children) that end one per second from then, and the last earlier call
    ended ``ended_before_s`` before."""
    from api.root.drain import Drain
    from engine.admission import Admission
    from engine.group import DynamicGroup
    from engine.lifecycle import StopSignal

    def call_for(duration_s: float) -> Any:
        async def run(stop: StopSignal, *, task_status: trio.TaskStatus[None]) -> None:
            task_status.started()
            await trio.sleep(duration_s)  # the caller talks, then hangs up

        return run

    stop = StopSignal()
    calls = DynamicGroup("calls", max_children=10, shutdown_s=5.0, report=lambda _: None)
    drain = Drain(Admission(), calls, stop, drain_timeout_s=30.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(calls.run, stop)
        if ended_before_s is not None:
            await calls.start_child("earlier", call_for(0.0))
            await trio.sleep(ended_before_s)
        for n in range(live):
            await calls.start_child(f"CA{n}", call_for(1.0 + n))
        begun_at_s = trio.current_time()
        nursery.start_soon(drain.run)
        drain.begin()
        await stop.wait()
        return trio.current_time() - begun_at_s


async def test_a_stop_with_no_call_ended_lately_does_not_wait(autojump_clock: Any) -> None:
    assert await _stopped_after_s(None, 0) == 0.0  # no call at all: at once
    assert await _stopped_after_s(9.0, 0) == 0.0  # the last call ended 9 s before


async def test_the_api_stays_up_for_the_status_callbacks_of_a_call_just_ended(
    autojump_clock: Any,
) -> None:
    # Its status callback is on its way: up to 2 s after the call's end.
    assert await _stopped_after_s(0.5, 0) == pytest.approx(1.5, abs=1e-9)
    # Two live calls, ending 1 s and 2 s after the begin: the grace follows the last, and
    # counts from the moment it ended (not from when a poll noticed).
    assert await _stopped_after_s(None, 2) == pytest.approx(4.0, abs=1e-9)


@pytest.mark.parametrize(("shorten_at_s", "stopped_at_s"), [(None, 30.0), (3.0, 3.0)])
async def test_a_drain_that_runs_out_or_is_shortened_stops_with_calls_still_live(
    autojump_clock: Any, shorten_at_s: float | None, stopped_at_s: float
) -> None:
    # A 40 s call outlasts the 30 s drain: the stop comes at the drain's timeout, or at
    # once on a second signal (shorten).
    from api.root.drain import Drain
    from engine.admission import Admission
    from engine.group import DynamicGroup
    from engine.lifecycle import StopSignal

    async def long_call(stop: StopSignal, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        with trio.move_on_after(40.0):
            await stop.wait()

    stop = StopSignal()
    calls = DynamicGroup("calls", max_children=10, shutdown_s=5.0, report=lambda _: None)
    drain = Drain(Admission(), calls, stop, drain_timeout_s=30.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(calls.run, stop)
        await calls.start_child("CA1", long_call)
        begun_at_s = trio.current_time()
        nursery.start_soon(drain.run)
        drain.begin()
        if shorten_at_s is not None:
            await trio.sleep(shorten_at_s)
            drain.shorten()
        await stop.wait()
        assert trio.current_time() - begun_at_s == pytest.approx(stopped_at_s, abs=1e-9)
        assert calls.statistics().active == 1  # the stop ends it, politely
