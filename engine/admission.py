"""Whether the engine takes new calls: accepting, or draining before a stop; and
whether it is too busy for one more right now.

The composition root owns it: the drain is begun by the root, ``overloaded`` is set by
the load monitor (actors/load.py) at every tick. The voice webhook and ``/health`` read
it synchronously (a snapshot, like every ``statistics()``), so a balancer's probe and
Twilio's webhook see a drain or an overload the moment it begins.
"""

from __future__ import annotations

from typing import Literal

AdmissionState = Literal["accepting", "draining"]


class Admission:
    def __init__(self) -> None:
        self._state: AdmissionState = "accepting"
        # Why new calls are turned away for load ("cpu", "loop_lag"), or None.
        self.overloaded: str | None = None

    @property
    def state(self) -> AdmissionState:
        return self._state

    @property
    def draining(self) -> bool:
        return self._state == "draining"

    def begin_draining(self) -> None:
        self._state = "draining"
