"""Every overflow policy, its counters, and the checkpoint contract of the mailbox."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from engine.lifecycle import StopSignal
from engine.mailbox import Mailbox, OverflowPolicy


def filled(policy: OverflowPolicy, capacity: int = 2) -> Mailbox[int]:
    mailbox: Mailbox[int] = Mailbox("test", capacity, policy)
    for n in range(capacity):
        assert mailbox.send_nowait(n)
    return mailbox


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity must be an integer >= 1"):
        Mailbox[int]("bad", 0, OverflowPolicy.BLOCK)


async def test_drop_newest_refuses_and_counts() -> None:
    mailbox = filled(OverflowPolicy.DROP_NEWEST)
    assert mailbox.send_nowait(99) is False
    await mailbox.send(100)  # the async form applies the same policy and never waits
    assert mailbox.drain_nowait() == [0, 1]
    stats = mailbox.statistics()
    assert (stats.dropped_total, stats.accepted_total, stats.queued) == (2, 2, 0)


async def test_drop_oldest_evicts_and_counts() -> None:
    mailbox = filled(OverflowPolicy.DROP_OLDEST)
    assert mailbox.send_nowait(2) is True
    await mailbox.send(3)
    assert mailbox.drain_nowait() == [2, 3]
    stats = mailbox.statistics()
    assert (stats.dropped_total, stats.accepted_total) == (2, 4)


def test_block_policy_nowait_raises_would_block_when_full() -> None:
    mailbox = filled(OverflowPolicy.BLOCK)
    with pytest.raises(trio.WouldBlock):
        mailbox.send_nowait(2)
    assert mailbox.statistics().dropped_total == 0


async def test_block_policy_waits_for_room(autojump_clock: trio.testing.MockClock) -> None:
    mailbox = filled(OverflowPolicy.BLOCK)
    delivered = trio.Event()

    async def sender() -> None:
        await mailbox.send(2)
        delivered.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        assert mailbox.statistics().waiting_senders == 1
        assert not delivered.is_set()
        assert await mailbox.receive() == 0
    assert delivered.is_set()
    assert mailbox.drain_nowait() == [1, 2]


async def test_block_policy_send_times_out_without_losing_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mailbox = filled(OverflowPolicy.BLOCK)
    with trio.move_on_after(5) as scope:
        await mailbox.send(2)
    assert scope.cancelled_caught
    assert mailbox.drain_nowait() == [0, 1]
    assert mailbox.statistics().accepted_total == 2


async def test_send_and_receive_are_checkpoints() -> None:
    mailbox: Mailbox[int] = Mailbox("cp", 4, OverflowPolicy.DROP_NEWEST)
    with trio.testing.assert_checkpoints():
        await mailbox.send(1)
    with trio.testing.assert_checkpoints():
        assert await mailbox.receive() == 1


async def test_closed_mailbox_drains_then_ends() -> None:
    mailbox = filled(OverflowPolicy.BLOCK)
    mailbox.close()
    assert mailbox.statistics().closed
    assert [await mailbox.receive(), await mailbox.receive()] == [0, 1]
    with pytest.raises(trio.EndOfChannel):
        await mailbox.receive()
    with pytest.raises(trio.ClosedResourceError):
        await mailbox.send(5)


def test_drop_policy_counts_sends_after_close() -> None:
    mailbox: Mailbox[int] = Mailbox("m", 2, OverflowPolicy.DROP_NEWEST)
    mailbox.close()
    assert mailbox.send_nowait(1) is False
    assert mailbox.statistics().dropped_total == 1


async def test_receive_until_stop_returns_none_and_keeps_messages(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mailbox: Mailbox[int] = Mailbox("m", 4, OverflowPolicy.BLOCK)
    stop = StopSignal()
    results: list[int | None] = []

    async def reader() -> None:
        results.append(await mailbox.receive_until(stop))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.sleep(10)
        stop.request()
    assert results == [None]
    mailbox.send_nowait(7)
    # Once stopped, receive_until never waits, and the message is still there to drain.
    assert await mailbox.receive_until(stop) is None
    assert mailbox.drain_nowait() == [7]


async def test_receive_until_returns_message_when_one_is_queued() -> None:
    mailbox: Mailbox[int] = Mailbox("m", 4, OverflowPolicy.BLOCK)
    mailbox.send_nowait(3)
    assert await mailbox.receive_until(StopSignal()) == 3
