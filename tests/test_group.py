"""The dynamic call group: temporary children that never disturb each other."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from engine.errors import ChildStartError
from engine.events import ChildExited, ExitReason, SupervisorEvent
from engine.group import DynamicGroup, GroupRefused
from engine.lifecycle import StopSignal


def call(
    log: list[str],
    name: str,
    *,
    crash_after_s: float | None = None,
    fail_before_started: bool = False,
    cleanup_s: float = 0.0,
    ignore_stop: bool = False,
) -> Any:
    async def run(stop: StopSignal, *, task_status: trio.TaskStatus[str]) -> None:
        if fail_before_started:
            raise ConnectionError(f"{name}: model handshake refused")
        task_status.started(f"handle-{name}")
        try:
            if crash_after_s is not None:
                await trio.sleep(crash_after_s)
                raise RuntimeError(f"{name} crashed")
            if ignore_stop:
                await trio.sleep_forever()
            await stop.wait()
            await trio.sleep(cleanup_s)
            log.append(f"stopped {name}")
        except trio.Cancelled:
            log.append(f"killed {name}")
            raise

    return run


async def running_group(
    nursery: trio.Nursery, events: list[SupervisorEvent], **kwargs: Any
) -> tuple[DynamicGroup, StopSignal]:
    options: dict[str, Any] = {"max_children": 10, "shutdown_s": 5.0} | kwargs
    group = DynamicGroup("calls", report=events.append, **options)
    stop = StopSignal()
    await nursery.start(group.run, stop)
    return group, stop


async def test_crashing_call_does_not_touch_its_siblings(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []
    events: list[SupervisorEvent] = []
    async with trio.open_nursery() as nursery:
        group, stop = await running_group(nursery, events)
        assert await group.start_child("CA1", call(log, "CA1")) == "handle-CA1"
        await group.start_child("CA2", call(log, "CA2", crash_after_s=1.0))
        await group.start_child("CA3", call(log, "CA3"))
        await trio.sleep(5)
        stats = group.statistics()
        assert (stats.active, stats.started_total, stats.failed_total) == (2, 3, 1)
        stop.request()
    assert sorted(log) == ["stopped CA1", "stopped CA3"]
    exits = {e.child_id: e for e in events if isinstance(e, ChildExited)}
    assert exits["CA2"].reason is ExitReason.FAILED
    assert exits["CA2"].error == "RuntimeError: CA2 crashed"
    assert exits["CA1"].reason is ExitReason.STOPPED
    # Temporary: the crashed call was never started again.
    assert group.statistics().started_total == 3


async def test_failure_before_started_reaches_the_caller_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []
    events: list[SupervisorEvent] = []
    async with trio.open_nursery() as nursery:
        group, stop = await running_group(nursery, events)
        await group.start_child("CA1", call(log, "CA1"))
        with pytest.raises(ChildStartError, match="CA2 failed to start: ConnectionError"):
            await group.start_child("CA2", call(log, "CA2", fail_before_started=True))
        stats = group.statistics()
        assert (stats.active, stats.failed_total) == (1, 1)
        stop.request()
    assert log == ["stopped CA1"]


async def test_capacity_and_duplicates_are_refused(autojump_clock: trio.testing.MockClock) -> None:
    log: list[str] = []
    async with trio.open_nursery() as nursery:
        group, stop = await running_group(nursery, [], max_children=2)
        await group.start_child("CA1", call(log, "CA1"))
        with pytest.raises(GroupRefused, match="already running"):
            await group.start_child("CA1", call(log, "CA1"))
        await group.start_child("CA2", call(log, "CA2"))
        with pytest.raises(GroupRefused, match=r"at capacity \(2 children\)"):
            await group.start_child("CA3", call(log, "CA3"))
        assert group.statistics().refused_total == 2
        stop.request()
    with pytest.raises(GroupRefused, match="stopping or not running"):
        await group.start_child("CA4", call(log, "CA4"))


async def test_stop_drains_children_in_parallel_within_the_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []
    async with trio.open_nursery() as nursery:
        group, stop = await running_group(nursery, [], shutdown_s=5.0)
        for n in range(3):
            await group.start_child(f"CA{n}", call(log, f"CA{n}", cleanup_s=2.0))
        await group.start_child("STUCK", call(log, "STUCK", ignore_stop=True))
        stopped_at_s = trio.current_time()
        stop.request()
    # In parallel: the three 2 s drains overlap; the stuck call is cancelled at 5 s.
    assert trio.current_time() - stopped_at_s == pytest.approx(5.0)
    assert sorted(log) == ["killed STUCK", "stopped CA0", "stopped CA1", "stopped CA2"]
    stats = group.statistics()
    assert (stats.completed_total, stats.killed_total, stats.active) == (3, 1, 0)
    assert not stats.accepting


async def test_cancelled_starter_leaves_no_reservation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow_handshake(stop: StopSignal, *, task_status: trio.TaskStatus[None]) -> None:
        await trio.sleep(60)
        task_status.started()

    async with trio.open_nursery() as nursery:
        group, stop = await running_group(nursery, [])
        with trio.move_on_after(1):
            await group.start_child("CA1", slow_handshake)
        assert group.statistics().active == 0
        stop.request()


async def test_wait_empty_returns_the_moment_the_last_child_ends_not_before(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []
    async with trio.open_nursery() as nursery:
        group, stop = await running_group(nursery, [])
        began_s = trio.current_time()
        await group.wait_empty()  # none running: at once
        assert trio.current_time() == began_s
        await group.start_child("CA1", call(log, "CA1", crash_after_s=1.0))
        await group.start_child("CA2", call(log, "CA2", crash_after_s=3.0))

        async def third_joins() -> None:  # started while the group is being waited on
            await trio.sleep(2.0)
            await group.start_child("CA3", call(log, "CA3", crash_after_s=2.37))

        nursery.start_soon(third_joins)
        await group.wait_empty()
        # CA1 ended at 1 s and CA2 at 3 s; CA3, started at 2 s, at 4.37 s: exactly then (a
        # poll would return up to a period later; a wake on any exit, at 1 s).
        assert trio.current_time() - began_s == pytest.approx(4.37, abs=1e-9)
        stats = group.statistics()
        assert (stats.active, stats.last_exit_at_s) == (0, trio.current_time())
        stop.request()


async def test_wait_empty_wakes_when_the_last_child_fails_to_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def refused_after_s(stop: StopSignal, *, task_status: trio.TaskStatus[None]) -> None:
        await trio.sleep(1.37)
        raise ConnectionError("model handshake refused")

    async def start_it(group: DynamicGroup) -> None:
        with pytest.raises(ChildStartError):
            await group.start_child("CA1", refused_after_s)

    async with trio.open_nursery() as nursery:
        group, stop = await running_group(nursery, [])
        began_s = trio.current_time()
        nursery.start_soon(start_it, group)
        await trio.sleep(0.5)
        assert group.statistics().active == 1  # reserved while it starts
        await group.wait_empty()
        assert trio.current_time() - began_s == pytest.approx(1.37, abs=1e-9)
        stop.request()
