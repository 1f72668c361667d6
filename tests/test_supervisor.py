"""OTP semantics of the static supervisor, on virtual time (autojump_clock)."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from engine.errors import ChildStartError, RestartIntensityExceeded
from engine.events import (
    ChildExited,
    ChildRestarted,
    ChildStarted,
    ExitReason,
    SupervisorEscalated,
    SupervisorEvent,
)
from engine.lifecycle import StopSignal
from engine.supervisor import (
    ChildSpec,
    RestartIntensity,
    RestartType,
    RestartWindow,
    Supervisor,
)


@dataclass
class Journal:
    """What the children did, in order, plus every event the supervisor reported."""

    lines: list[str] = field(default_factory=list)
    events: list[SupervisorEvent] = field(default_factory=list)

    def exits(self, child_id: str) -> list[ExitReason]:
        return [
            e.reason for e in self.events if isinstance(e, ChildExited) and e.child_id == child_id
        ]


def worker(
    journal: Journal,
    name: str,
    *,
    crash_after_s: float | None = None,
    fail_before_started: bool = False,
    return_after_s: float | None = None,
    ignore_stop: bool = False,
    cleanup_s: float = 0.0,
) -> Any:
    """A child that behaves as told, writing what it does into the journal."""

    async def run(stop: StopSignal, *, task_status: trio.TaskStatus[None]) -> None:
        journal.lines.append(f"start {name}")
        if fail_before_started:
            raise OSError(f"{name} cannot bind")
        task_status.started()
        try:
            if crash_after_s is not None:
                await trio.sleep(crash_after_s)
                raise RuntimeError(f"{name} crashed")
            if return_after_s is not None:
                await trio.sleep(return_after_s)
                journal.lines.append(f"done {name}")
                return
            if ignore_stop:
                await trio.sleep_forever()
            await stop.wait()
            await trio.sleep(cleanup_s)  # graceful cleanup takes time
            journal.lines.append(f"stop {name}")
        except trio.Cancelled:
            journal.lines.append(f"killed {name}")
            raise

    return run


def supervisor(journal: Journal, specs: list[ChildSpec], **intensity: Any) -> Supervisor:
    return Supervisor(
        "root",
        specs,
        intensity=RestartIntensity(**intensity),
        report=journal.events.append,
    )


async def test_children_start_in_order_and_stop_in_reverse(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    specs = [ChildSpec(name, worker(journal, name)) for name in ("store", "metrics", "api")]
    sup = supervisor(journal, specs)
    stop = StopSignal()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run, stop)
            assert all(c.running for c in sup.statistics().children)
            stop.request()
    assert journal.lines == [
        "start store",
        "start metrics",
        "start api",
        "stop api",
        "stop metrics",
        "stop store",
    ]
    assert [e.child_id for e in journal.events if isinstance(e, ChildStarted)] == [
        "store",
        "metrics",
        "api",
    ]
    assert journal.exits("api") == [ExitReason.STOPPED]


async def test_child_past_its_budget_is_cancelled_and_others_still_stop_gracefully(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    specs = [
        ChildSpec("store", worker(journal, "store", cleanup_s=1.0), shutdown_s=5.0),
        ChildSpec("stuck", worker(journal, "stuck", ignore_stop=True), shutdown_s=3.0),
    ]
    sup = supervisor(journal, specs)
    stop = StopSignal()
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run, stop)
        stopped_at_s = trio.current_time()
        stop.request()
    elapsed_s = trio.current_time() - stopped_at_s
    assert journal.lines[-2:] == ["killed stuck", "stop store"]
    # 3 s budget for the stuck child, then the store's 1 s of graceful cleanup.
    assert elapsed_s == pytest.approx(4.0)
    assert journal.exits("stuck") == [ExitReason.KILLED]
    assert journal.exits("store") == [ExitReason.STOPPED]


async def test_permanent_child_is_restarted_alone(autojump_clock: trio.testing.MockClock) -> None:
    journal = Journal()
    crashes_once = {"left": 1}

    async def flaky(stop: StopSignal, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        journal.lines.append("start flaky")
        if crashes_once["left"]:
            crashes_once["left"] -= 1
            await trio.sleep(1)
            raise RuntimeError("boom")
        await stop.wait()

    specs = [ChildSpec("steady", worker(journal, "steady")), ChildSpec("flaky", flaky)]
    sup = supervisor(journal, specs)
    stop = StopSignal()
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run, stop)
        await trio.sleep(10)
        stats = {c.id: c for c in sup.statistics().children}
        assert stats["flaky"].restart_count == 1
        assert stats["flaky"].running
        assert stats["steady"].restart_count == 0
        assert stats["steady"].running
        stop.request()
    assert journal.lines.count("start steady") == 1
    assert journal.lines.count("start flaky") == 2
    assert journal.exits("flaky") == [ExitReason.FAILED, ExitReason.STOPPED]
    restarted = [e for e in journal.events if isinstance(e, ChildRestarted)]
    assert [(e.child_id, e.restart_count) for e in restarted] == [("flaky", 1)]
    failed = next(e for e in journal.events if isinstance(e, ChildExited) and e.error)
    assert failed.error == "RuntimeError: boom"


async def test_restart_intensity_exceeded_escalates_after_stopping_siblings(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    specs = [
        ChildSpec("steady", worker(journal, "steady")),
        ChildSpec("crasher", worker(journal, "crasher", crash_after_s=1.0)),
    ]
    sup = supervisor(journal, specs, max_restarts=3, period_s=60.0)
    with pytest.RaisesGroup(pytest.RaisesExc(RestartIntensityExceeded, match="more than 3")):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run, StopSignal())
    # 1 start + 3 restarts; the 4th crash within 60 s escalates instead of restarting.
    assert journal.lines.count("start crasher") == 4
    assert journal.lines[-1] == "stop steady"  # the sibling was stopped gracefully first
    assert any(isinstance(e, SupervisorEscalated) for e in journal.events)


async def test_crashes_spread_wider_than_the_period_never_escalate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    specs = [ChildSpec("crasher", worker(journal, "crasher", crash_after_s=70.0))]
    sup = supervisor(journal, specs, max_restarts=1, period_s=60.0)
    stop = StopSignal()
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run, stop)
        await trio.sleep(10 * 70.0 + 1)  # ten crashes, 70 s apart: never 2 within 60 s
        assert sup.statistics().restarts_total == 10
        stop.request()


@pytest.mark.parametrize(
    ("crash_every_s", "escalates_at_s"),
    [
        # A restart exactly period_s after the previous one no longer counts it.
        pytest.param(30.0, None, id="old-restart-leaves-the-window"),
        pytest.param(29.0, 58.0, id="second-restart-inside-the-window"),
    ],
)
async def test_intensity_window_boundary(
    crash_every_s: float, escalates_at_s: float | None, autojump_clock: trio.testing.MockClock
) -> None:
    journal = Journal()
    specs = [ChildSpec("crasher", worker(journal, "crasher", crash_after_s=crash_every_s))]
    sup = supervisor(journal, specs, max_restarts=1, period_s=30.0)
    stop = StopSignal()
    escalated: list[float] = []

    async def run_supervisor() -> None:
        try:
            await sup.run(stop, task_status=trio.TASK_STATUS_IGNORED)
        except RestartIntensityExceeded:
            escalated.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_supervisor)
        await trio.sleep(20 * crash_every_s + 1)
        stop.request()
    assert escalated == ([] if escalates_at_s is None else [pytest.approx(escalates_at_s)])


async def test_the_restart_window_the_workers_parent_and_the_postmaster_share(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``RestartWindow`` alone, as api/workers.py and engine/postgres_supervisor.py use it:
    ``max_restarts`` within ``period_s`` are admitted, one more is refused and not
    counted, and a restart ``period_s`` old no longer counts."""
    window = RestartWindow(RestartIntensity(max_restarts=2, period_s=60.0))
    assert [window.admit(), window.admit()] == [True, True]
    assert window.recent == 2  # the postmaster's backoff doubles by this count
    await trio.sleep(59.0)
    assert not window.admit()  # the third within 60 s: escalate
    assert window.recent == 2
    await trio.sleep(1.0)  # the first two are now exactly 60 s old
    assert window.admit()
    assert window.recent == 1
    assert not RestartWindow(RestartIntensity(max_restarts=0)).admit()


async def test_stop_during_start_aborts_the_start(autojump_clock: trio.testing.MockClock) -> None:
    journal = Journal()

    async def slow_start(stop: StopSignal, *, task_status: trio.TaskStatus[None]) -> None:
        journal.lines.append("start slow")
        await trio.sleep(60)  # e.g. waiting for a database that does not answer
        task_status.started()
        await stop.wait()

    specs = [
        ChildSpec("store", worker(journal, "store")),
        ChildSpec("slow", slow_start),
        ChildSpec("never", worker(journal, "never")),
    ]
    sup = supervisor(journal, specs)
    stop = StopSignal()
    reported_started = []

    class Status:
        def started(self, value: object = None) -> None:
            reported_started.append(value)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(sup.run, stop, task_status=Status()))
        await trio.sleep(1)
        stop.request()
    assert trio.current_time() == pytest.approx(1.0)  # not after the 60 s start
    assert journal.lines == ["start store", "start slow", "stop store"]
    assert reported_started == []


async def test_a_restart_that_cannot_start_is_logged_and_retried_until_escalation(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal()
    runs = {"count": 0}

    async def store(stop: StopSignal, *, task_status: trio.TaskStatus[None]) -> None:
        runs["count"] += 1
        if runs["count"] > 1:
            raise ConnectionRefusedError("database down")  # every restart fails to start
        task_status.started()
        await trio.sleep(5)
        raise ConnectionResetError("connection lost")

    sup = supervisor(journal, [ChildSpec("store", store)], max_restarts=2, period_s=60.0)
    with pytest.raises(RestartIntensityExceeded, match="more than 2 restarts"):
        await sup.run(StopSignal(), task_status=trio.TASK_STATUS_IGNORED)
    assert journal.exits("store") == [
        ExitReason.FAILED,
        ExitReason.START_FAILED,
        ExitReason.START_FAILED,
    ]
    # Restarts that cannot start are crashes of a running engine: alerted as such.
    store_exits = [e for e in journal.events if isinstance(e, ChildExited)]
    assert [e.in_first_start for e in store_exits] == [False, False, False]
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert logged.count("root/store exited: ConnectionRefusedError: database down") == 2
    assert any("last error: ConnectionRefusedError: database down" in m for m in logged)


async def test_child_crashing_in_its_graceful_stop_is_reported_not_restarted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()

    async def messy(stop: StopSignal, *, task_status: trio.TaskStatus[None]) -> None:
        journal.lines.append("start messy")
        task_status.started()
        await stop.wait()
        raise OSError("flush failed")

    specs = [ChildSpec("store", worker(journal, "store")), ChildSpec("messy", messy)]
    sup = supervisor(journal, specs)
    stop = StopSignal()
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run, stop)
        stop.request()
    assert journal.exits("messy") == [ExitReason.FAILED]
    assert journal.lines == ["start store", "start messy", "stop store"]
    assert sup.statistics().restarts_total == 0


@pytest.mark.parametrize(
    ("restart", "exit_kind", "expected_starts"),
    [
        pytest.param(RestartType.TEMPORARY, "crash", 1, id="temporary-crash-not-restarted"),
        pytest.param(RestartType.TEMPORARY, "return", 1, id="temporary-return-not-restarted"),
        pytest.param(RestartType.TRANSIENT, "return", 1, id="transient-normal-exit-stays-down"),
        pytest.param(RestartType.TRANSIENT, "crash", 3, id="transient-crash-restarted"),
        pytest.param(RestartType.PERMANENT, "return", 3, id="permanent-return-restarted"),
    ],
)
async def test_restart_types(
    restart: RestartType,
    exit_kind: str,
    expected_starts: int,
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    if exit_kind == "crash":
        child = worker(journal, "child", crash_after_s=1.0)
    else:
        child = worker(journal, "child", return_after_s=1.0)
    specs = [
        ChildSpec("steady", worker(journal, "steady")),
        ChildSpec("child", child, restart=restart),
    ]
    # Room for two restarts in the window; each run lasts 1 s, so 2.5 s sees at most 3 runs.
    sup = supervisor(journal, specs, max_restarts=5, period_s=60.0)
    stop = StopSignal()
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run, stop)
        await trio.sleep(2.5)
        stop.request()
    assert journal.lines.count("start child") == expected_starts
    assert "stop steady" in journal.lines  # the sibling was never disturbed


async def test_child_failing_before_started_fails_the_start_and_unwinds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    specs = [
        ChildSpec("store", worker(journal, "store")),
        ChildSpec("metrics", worker(journal, "metrics")),
        ChildSpec("api", worker(journal, "api", fail_before_started=True)),
        ChildSpec("never", worker(journal, "never")),
    ]
    sup = supervisor(journal, specs)
    with pytest.RaisesGroup(
        pytest.RaisesExc(ChildStartError, match="api failed to start: OSError: api cannot bind")
    ):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run, StopSignal())
    assert journal.lines == [
        "start store",
        "start metrics",
        "start api",
        "stop metrics",
        "stop store",
    ]
    assert journal.exits("api") == [ExitReason.START_FAILED]
    # The engine's own start failed: the starter reports it (no crash alert, api/cli/main.py).
    (api_exit,) = [e for e in journal.events if isinstance(e, ChildExited) and e.child_id == "api"]
    assert api_exit.in_first_start


async def test_child_returning_before_started_fails_the_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def lazy(stop: StopSignal, *, task_status: trio.TaskStatus[None]) -> None:
        return

    sup = Supervisor(
        "root", [ChildSpec("lazy", lazy)], intensity=RestartIntensity(), report=lambda e: None
    )
    with pytest.RaisesGroup(pytest.RaisesExc(ChildStartError, match="returned before started")):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run, StopSignal())


def test_specs_are_validated() -> None:
    async def noop(stop: StopSignal, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()

    with pytest.raises(ValueError, match="shutdown_s must be > 0"):
        ChildSpec("x", noop, shutdown_s=0)
    with pytest.raises(ValueError, match="duplicate child ids"):
        Supervisor(
            "s",
            [ChildSpec("x", noop), ChildSpec("x", noop)],
            intensity=RestartIntensity(),
            report=lambda e: None,
        )


async def test_supervisors_nest(autojump_clock: trio.testing.MockClock) -> None:
    journal = Journal()
    inner = supervisor(journal, [ChildSpec("leaf", worker(journal, "leaf"))])
    outer = supervisor(
        journal, [ChildSpec("inner", inner.run), ChildSpec("api", worker(journal, "api"))]
    )
    stop = StopSignal()
    async with trio.open_nursery() as nursery:
        await nursery.start(outer.run, stop)
        stop.request()
    assert journal.lines == ["start leaf", "start api", "stop api", "stop leaf"]


@pytest.mark.parametrize("ending", ["stop", "escalation", "failed-start"])
async def test_on_stopping_is_called_once_whatever_ends_the_supervisor(
    ending: str, autojump_clock: trio.testing.MockClock
) -> None:
    journal = Journal()
    calls: list[float] = []
    last = {
        "stop": worker(journal, "last"),
        "escalation": worker(journal, "last", crash_after_s=1.0),
        "failed-start": worker(journal, "last", fail_before_started=True),
    }[ending]
    sup = Supervisor(
        "root",
        [ChildSpec("first", worker(journal, "first")), ChildSpec("last", last)],
        intensity=RestartIntensity(max_restarts=1, period_s=60.0),
        report=journal.events.append,
        on_stopping=lambda: calls.append(trio.current_time()),
    )
    stop = StopSignal()

    async def run_to_the_end() -> None:
        with contextlib.suppress(RestartIntensityExceeded, ChildStartError):
            await sup.run(stop, task_status=trio.TASK_STATUS_IGNORED)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_to_the_end)
        await trio.sleep(10)
        stop.request()
    assert len(calls) == 1
    assert "stop first" in journal.lines  # and the orderly stop followed
