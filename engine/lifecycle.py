"""``StopSignal``: how a supervisor asks a child to stop gracefully.

Trio has one kind of cancellation, and it is abrupt. OTP's shutdown has two steps: ask the
child to stop, then kill it when its budget runs out. The supervisor does the second step
with the child's cancel scope; this module is the first step. Setting the signal also
cancels every scope a child opened with ``interruptible()``, so an actor blocked on its
inbox wakes up at once without a helper task (no extra task per actor, no polling).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Iterator


class StopSignal:
    """Set once by the supervisor; read by the child. Synchronous, so it can be requested
    from cleanup code and signal handlers without a checkpoint."""

    def __init__(self) -> None:
        self._event = trio.Event()
        self._scopes: set[trio.CancelScope] = set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self) -> None:
        """Ask the child to stop. Idempotent."""
        self._event.set()
        for scope in tuple(self._scopes):
            scope.cancel()

    async def wait(self) -> None:
        """Return once a stop was requested (usable as hypercorn's ``shutdown_trigger``)."""
        await self._event.wait()

    def detach(self, scope: trio.CancelScope) -> None:
        """Stop cancelling ``scope`` on a request (a start-up phase that has ended)."""
        self._scopes.discard(scope)

    @contextmanager
    def interruptible(self) -> Iterator[trio.CancelScope]:
        """A cancel scope that a stop request cancels. Wrap only the waiting part: a
        cancelled ``receive()`` on a memory channel leaves the item in the channel, so
        nothing is lost when a stop interrupts it."""
        scope = trio.CancelScope()
        if self.requested:
            scope.cancel()
        self._scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._scopes.discard(scope)
