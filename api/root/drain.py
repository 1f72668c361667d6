"""The graceful drain before a stop (OTP's ``prep_stop``, before the tree unwinds).

A first SIGTERM/SIGINT (or ``Engine.drain``) turns admission to draining: the voice
webhook answers new callers politely (the on-call number when the project has one) and
``GET /health`` answers 503 ``draining`` so balancers send calls elsewhere, while the
calls in progress carry on and the API, the media listener and the store keep serving
them. The drain ends when the last call has ended, after ``DRAIN_TIMEOUT_S``, or at once
on a second signal; then the supervisor stops the tree, and each call still live is
ended politely by its actor (a goodbye heard, then the hang-up).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from engine.admission import Admission
    from engine.group import DynamicGroup
    from engine.lifecycle import StopSignal

log = logging.getLogger("afterhours")

# Once the last call has ended, Twilio's status callbacks for it are still on their way:
# the API stays up until this long after that call's end (within the drain's budget). A
# stop with no call ended lately does not wait.
CALLBACK_GRACE_S = 2.0


class Drain:
    def __init__(
        self,
        admission: Admission,
        calls: DynamicGroup,
        stop: StopSignal,
        *,
        drain_timeout_s: float,
    ) -> None:
        self._admission = admission
        self._calls = calls
        self._stop = stop
        self._drain_timeout_s = drain_timeout_s
        self._begun = trio.Event()
        self._shortened = trio.Event()

    @property
    def begun(self) -> bool:
        return self._begun.is_set()

    def begin(self) -> None:
        """Stop taking calls; stop the engine once the live ones have ended."""
        if not self._begun.is_set():
            self._admission.begin_draining()
            self._begun.set()

    def shorten(self) -> None:
        """End the drain now: live calls are ended politely by the stop."""
        self.begin()
        self._shortened.set()

    async def run(self) -> None:
        await self._begun.wait()
        live = self._calls.statistics().active
        log.info(
            "draining: new calls are turned away; %d live call(s) get up to %g s to finish",
            live,
            self._drain_timeout_s,
        )
        with trio.move_on_after(self._drain_timeout_s) as timed_out:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._wait_shortened, nursery.cancel_scope)
                await self._calls.wait_empty()  # the moment the last call ends
                ended_at_s = self._calls.statistics().last_exit_at_s
                if ended_at_s is not None:
                    await trio.sleep_until(ended_at_s + CALLBACK_GRACE_S)
                nursery.cancel_scope.cancel()
        left = self._calls.statistics().active
        if left:
            why = "drain timeout" if timed_out.cancelled_caught else "second signal"
            log.warning("%s: ending %d live call(s) politely", why, left)
        else:
            log.info("drained: no live calls")
        self._stop.request()

    async def _wait_shortened(self, scope: trio.CancelScope) -> None:
        await self._shortened.wait()
        scope.cancel()
