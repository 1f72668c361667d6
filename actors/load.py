"""The load monitor: how busy this process is, for admission by load.

Calls are admitted one at a time, but each one admitted costs every live call a little:
on one core past saturation, frames queue and every caller hears it. So new calls are
turned away while the process is near saturation, not only at a count. Every ``tick_s``
this actor samples the process's CPU time and how late its own timer woke (the
event-loop lag every task sees), and keeps the last ``window_s`` of samples.
``statistics()`` is the latest reading, frozen; at every tick the verdict is also set on
the root's ``Admission``, which the voice webhook reads synchronously before it answers
a call.

Hysteresis: once over a limit, admission resumes only when CPU and lag are back under
``RESUME_SHARE`` of their limits, so the engine does not flap at the edge.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import trio

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.admission import Admission
    from engine.lifecycle import StopSignal

TICK_S = 0.1
WINDOW_S = 1.0
RESUME_SHARE = 0.9
# A call costs little in its first seconds and its full share after (measured with
# bench/overload.py: at 20 new calls a second the CPU of the last second read 0.79 with
# 200 calls that went on to need 0.99). So the calls that joined in the last
# GROWTH_WINDOW_S are charged what the older ones cost: the projected share.
GROWTH_WINDOW_S = 3.0

Overload = Literal["cpu", "loop_lag"]


@dataclass(frozen=True, slots=True)
class LoadReading:
    cpu_share: float  # of one core, over the window
    projected_cpu_share: float  # with the newest calls charged what the older ones cost
    loop_lag_s: float  # the worst timer lateness in the window
    calls: int
    overloaded: Overload | None  # why new calls are turned away now, if they are


IDLE = LoadReading(0.0, 0.0, 0.0, 0, None)


class LoadMonitor:
    def __init__(
        self,
        *,
        max_cpu: float,
        max_loop_lag_s: float,
        tick_s: float = TICK_S,
        window_s: float = WINDOW_S,
        admission: Admission | None = None,
        active_calls: Callable[[], int] = lambda: 0,
    ) -> None:
        self._max_cpu = max_cpu
        self._max_loop_lag_s = max_loop_lag_s
        self._tick_s = tick_s
        self._samples: deque[tuple[float, float, float]] = deque(
            maxlen=max(2, round(window_s / tick_s) + 1)
        )  # (trio time, process CPU seconds, lag seconds)
        self._reading = IDLE
        self._admission = admission  # told at every tick whether to turn new calls away
        self._active_calls = active_calls
        self._calls: deque[int] = deque(maxlen=max(2, round(GROWTH_WINDOW_S / tick_s) + 1))

    def statistics(self) -> LoadReading:
        return self._reading

    async def run(self, stop: StopSignal, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        self._reading = IDLE
        self._samples.clear()
        self._calls.clear()
        while not stop.requested:
            due_s = trio.current_time() + self._tick_s
            await trio.sleep_until(due_s)
            now_s, lag_s = trio.current_time(), trio.current_time() - due_s
            self.sample(now_s, time.process_time(), lag_s, self._active_calls())

    def sample(self, now_s: float, cpu_s: float, lag_s: float, calls: int = 0) -> LoadReading:
        """Fold one sample in (the actor's tick; tests call it with their own numbers)."""
        self._samples.append((now_s, cpu_s, max(0.0, lag_s)))
        self._calls.append(calls)
        first_s, first_cpu_s, _ = self._samples[0]
        elapsed_s = now_s - first_s
        cpu_share = (cpu_s - first_cpu_s) / elapsed_s if elapsed_s > 0 else 0.0
        loop_lag_s = max(lag for _, _, lag in self._samples)
        joined = max(0, calls - self._calls[0])
        older = calls - joined
        projected = cpu_share * calls / older if older > 0 else cpu_share
        verdict = self._judge(projected, loop_lag_s)
        self._reading = LoadReading(cpu_share, projected, loop_lag_s, calls, verdict)
        if self._admission is not None:
            self._admission.overloaded = self._reading.overloaded
        return self._reading

    def _judge(self, cpu_share: float, loop_lag_s: float) -> Overload | None:
        """Judged on the projected CPU share and the timer lag."""
        if self._max_cpu < 1.0 and cpu_share >= self._max_cpu:  # 1: no CPU limit
            return "cpu"
        if loop_lag_s >= self._max_loop_lag_s:
            return "loop_lag"
        previous = self._reading.overloaded
        if previous == "cpu" and self._max_cpu < 1.0 and cpu_share >= self._max_cpu * RESUME_SHARE:
            return previous
        if previous == "loop_lag" and loop_lag_s >= self._max_loop_lag_s * RESUME_SHARE:
            return previous
        return None
