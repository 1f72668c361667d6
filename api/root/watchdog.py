"""The last resort of a graceful stop.

Trio cannot kill a task that shields itself without a deadline; a child stuck like that
(a bug) would keep the engine from ever exiting, and a deploy would wait on it forever.
Once a stop begins, this timer thread gives the whole stop its worst-case budget; past it,
the process logs what happened and exits with ``EXIT_SHUTDOWN_STUCK``. An embedded
PostgreSQL left behind is recognised as an orphan and replaced by the next start.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger("afterhours")

EXIT_SHUTDOWN_STUCK = 70  # EX_SOFTWARE: an internal error, as a stuck child is


def _exit_now() -> None:
    os._exit(EXIT_SHUTDOWN_STUCK)


class ShutdownWatchdog:
    def __init__(self, deadline_s: float, on_expiry: Callable[[], None] = _exit_now) -> None:
        self._deadline_s = deadline_s
        self._on_expiry = on_expiry
        self._timer: threading.Timer | None = None
        self._disarmed = False

    def arm(self) -> None:
        """Start the countdown (idempotent; never after ``disarm``)."""
        if self._timer is None and not self._disarmed:
            self._timer = threading.Timer(self._deadline_s, self._expire)
            self._timer.daemon = True
            self._timer.start()

    def disarm(self) -> None:
        """The stop finished: cancel the countdown for good."""
        self._disarmed = True
        if self._timer is not None:
            self._timer.cancel()

    def _expire(self) -> None:
        log.critical(
            "shutdown did not finish within %.0f s (a child ignores cancellation); exiting now",
            self._deadline_s,
        )
        self._on_expiry()
