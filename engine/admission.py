"""Whether the engine takes new calls: accepting, or draining before a stop.

The composition root owns it and is its only writer; the voice webhook and ``/health``
read it synchronously (a snapshot, like every ``statistics()``), so a balancer's probe
and Twilio's webhook see the drain the moment it begins.
"""

from __future__ import annotations

from typing import Literal

AdmissionState = Literal["accepting", "draining"]


class Admission:
    def __init__(self) -> None:
        self._state: AdmissionState = "accepting"

    @property
    def state(self) -> AdmissionState:
        return self._state

    @property
    def draining(self) -> bool:
        return self._state == "draining"

    def begin_draining(self) -> None:
        self._state = "draining"
