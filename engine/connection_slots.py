"""Who holds a listener's connections: a cap on all of them, and a smaller one on those
not yet proven.

A connection starts *pending*: it has not yet shown it is what the listener serves (for
the media port: a signed upgrade and a valid ``start``). Its owner calls ``prove`` once
it has. The two caps have different overflow policies, on purpose:

- over the total cap a newcomer is refused (``open`` returns ``None``): a proven
  connection, a live call, is never given up for a stranger;
- over the pending cap the *oldest* pending connection is evicted for the newcomer
  (DROP_OLDEST: its cancel scope is cancelled, ``evicted`` says so). A real peer proves
  itself within a round trip, so the one that has dawdled longest is the likeliest
  stranger, and strangers holding every pending slot cannot keep a real peer out: each
  newcomer pushes the oldest of them out.

Synchronous and owned by the listener's tasks (one Trio thread): no lock is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio


@dataclass(frozen=True, slots=True)
class SlotStatistics:
    open: int
    pending: int
    max_open: int
    max_pending: int
    peak_open: int
    peak_pending: int
    refused_total: int  # over the total cap
    evicted_total: int  # pending connections pushed out by newer ones


class Slot:
    """One connection's place. ``cancel_scope`` is cancelled when it is evicted: the
    connection's task runs inside it."""

    def __init__(self, owner: ConnectionSlots) -> None:
        self._owner = owner
        self.cancel_scope = trio.CancelScope()
        self.proven = False
        self.evicted = False
        self.released = False

    def prove(self) -> None:
        """The connection is what the listener serves: no longer pending, never
        evicted. No effect on an evicted slot (its cancellation is on its way)."""
        self._owner._prove(self)

    def release(self) -> None:
        """The connection is closed. Safe to call twice."""
        self._owner._release(self)


class ConnectionSlots:
    def __init__(self, *, max_open: int, max_pending: int) -> None:
        if not 0 < max_pending <= max_open:
            raise ValueError(f"need 0 < max_pending ({max_pending}) <= max_open ({max_open})")
        self.max_open = max_open
        self.max_pending = max_pending
        self._open = 0
        self._pending: dict[Slot, None] = {}  # insertion order: the oldest first
        self._peak_open = 0
        self._peak_pending = 0
        self._refused_total = 0
        self._evicted_total = 0

    def open(self) -> Slot | None:
        """A pending slot for a new connection, or ``None`` at the total cap."""
        if self._open >= self.max_open:
            self._refused_total += 1
            return None
        if len(self._pending) >= self.max_pending:
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            oldest.evicted = True
            oldest.cancel_scope.cancel()
            self._evicted_total += 1
        slot = Slot(self)
        self._pending[slot] = None
        self._open += 1
        self._peak_open = max(self._peak_open, self._open)
        self._peak_pending = max(self._peak_pending, len(self._pending))
        return slot

    def statistics(self) -> SlotStatistics:
        return SlotStatistics(
            open=self._open,
            pending=len(self._pending),
            max_open=self.max_open,
            max_pending=self.max_pending,
            peak_open=self._peak_open,
            peak_pending=self._peak_pending,
            refused_total=self._refused_total,
            evicted_total=self._evicted_total,
        )

    def _prove(self, slot: Slot) -> None:
        if slot in self._pending:
            del self._pending[slot]
            slot.proven = True

    def _release(self, slot: Slot) -> None:
        if slot.released:
            return
        slot.released = True
        self._pending.pop(slot, None)
        self._open -= 1
