"""Bounded mailboxes with a declared overflow policy.

Every channel between actors is one of these (docs/architecture.md lists them all). A
mailbox is created by the composition root and outlives the actor that reads it, so a
restarted actor finds its unread messages still waiting.

Policies:

* ``BLOCK``: the sender waits for room (backpressure). For messages that must not be lost;
  the sender bounds the wait with its own timeout.
* ``DROP_NEWEST``: a full mailbox refuses the new message and counts it. For samples whose
  loss is harmless compared with slowing the sender (metrics).
* ``DROP_OLDEST``: a full mailbox discards its oldest message to make room, and counts it.
  For streams where fresh data matters more than complete data (audio).

Trio's memory channels have no drop-oldest; because the mailbox holds the receive end
itself, it can evict with ``receive_nowait()`` without a second consumer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import trio

if TYPE_CHECKING:
    from engine.lifecycle import StopSignal

T = TypeVar("T")

# How long a record for the store (a call's update, a function call, an event_log row)
# waits for room in the store's inbox, by every sender: the store empties its inbox into
# PostgreSQL or its spool far faster, so a full inbox past this is a stuck store. The
# record is then lost and counted (``send_within``: the inbox's ``dropped_total``, which
# the store alerts on), and the call or request that sent it moves on: a record is never
# waited on for long.
RECORD_SEND_TIMEOUT_S = 2.0
T_contra = TypeVar("T_contra", contravariant=True)
T_co = TypeVar("T_co", covariant=True)


class OverflowPolicy(enum.Enum):
    BLOCK = "block"
    DROP_NEWEST = "drop_newest"
    DROP_OLDEST = "drop_oldest"


@dataclass(frozen=True, slots=True)
class MailboxStatistics:
    name: str
    capacity: int
    policy: str
    queued: int
    accepted_total: int
    dropped_total: int
    waiting_senders: int
    closed: bool


class Outbox(Protocol[T_contra]):
    """The sending side, as producers see it."""

    async def send(self, message: T_contra) -> None: ...

    async def send_within(self, message: T_contra, timeout_s: float) -> bool: ...

    def send_nowait(self, message: T_contra) -> bool: ...


class Inbox(Protocol[T_co]):
    """The receiving side, as the owning actor sees it."""

    async def receive(self) -> T_co: ...

    def receive_nowait(self) -> T_co: ...

    async def receive_until(self, stop: StopSignal) -> T_co | None: ...


class Mailbox(Generic[T]):
    """A bounded channel with an overflow policy, drop counters and ``statistics()``."""

    def __init__(self, name: str, capacity: int, policy: OverflowPolicy) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            # 0 would make DROP_* policies drop everything, and trio-websocket#82 shows
            # how a zero buffer stalls readers; unbounded is never allowed here.
            raise ValueError(
                f"mailbox {name!r}: capacity must be an integer >= 1, not {capacity!r}"
            )
        self.name = name
        self.capacity = capacity
        self.policy = policy
        self._send, self._receive = trio.open_memory_channel[T](capacity)
        self._accepted_total = 0
        self._dropped_total = 0

    # -- sending ---------------------------------------------------------------------------

    async def send(self, message: T) -> None:
        """Deliver ``message`` by the mailbox's policy. Only ``BLOCK`` ever waits.

        Raises ``trio.ClosedResourceError`` on a closed ``BLOCK`` mailbox (a lost message
        must be loud there); the drop policies count it as dropped instead.
        """
        if self.policy is OverflowPolicy.BLOCK:
            await self._send.send(message)
            self._accepted_total += 1
            return
        await trio.lowlevel.checkpoint()
        self.send_nowait(message)

    async def send_within(self, message: T, timeout_s: float) -> bool:
        """``send``, waiting at most ``timeout_s`` for room (``BLOCK``). False when it
        found none: the message is lost, counted in ``dropped_total`` for the one who
        watches this mailbox (the store alerts on it), and the caller logs it."""
        with trio.move_on_after(timeout_s):
            await self.send(message)
            return True
        self._dropped_total += 1
        return False

    def send_nowait(self, message: T) -> bool:
        """Deliver without waiting. Returns whether the message was queued.

        ``BLOCK``: raises ``trio.WouldBlock`` when full, so the caller decides what a lost
        message means. ``DROP_NEWEST``: refuses and counts. ``DROP_OLDEST``: evicts the
        oldest, counts it, and queues this one.
        """
        if self.policy is OverflowPolicy.BLOCK:
            self._send.send_nowait(message)
            self._accepted_total += 1
            return True
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            if self.policy is OverflowPolicy.DROP_NEWEST:
                self._dropped_total += 1
                return False
            self._receive.receive_nowait()
            self._dropped_total += 1
            self._send.send_nowait(message)
        except trio.ClosedResourceError:
            self._dropped_total += 1
            return False
        self._accepted_total += 1
        return True

    # -- receiving -------------------------------------------------------------------------

    async def receive(self) -> T:
        """Next message; raises ``trio.EndOfChannel`` once closed and drained."""
        return await self._receive.receive()

    def receive_nowait(self) -> T:
        return self._receive.receive_nowait()

    async def receive_until(self, stop: StopSignal) -> T | None:
        """Next message, or ``None`` once ``stop`` is requested or the mailbox is closed
        and drained. A stop never loses a message: the interrupted receive leaves it queued
        for the final drain."""
        with stop.interruptible():
            try:
                return await self._receive.receive()
            except trio.EndOfChannel:
                return None
        return None

    def drain_nowait(self, max_messages: int = 1_000_000) -> list[T]:
        """Everything queued right now (up to ``max_messages``), without waiting."""
        drained: list[T] = []
        while len(drained) < max_messages:
            try:
                drained.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        return drained

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Refuse further messages; the reader still drains what is queued, then sees
        ``EndOfChannel``. Synchronous so cancelled cleanup code can call it."""
        self._send.close()

    def statistics(self) -> MailboxStatistics:
        channel = self._send.statistics()
        return MailboxStatistics(
            name=self.name,
            capacity=self.capacity,
            policy=self.policy.value,
            queued=channel.current_buffer_used,
            accepted_total=self._accepted_total,
            dropped_total=self._dropped_total,
            waiting_senders=channel.tasks_waiting_send,
            closed=channel.open_send_channels == 0,
        )
