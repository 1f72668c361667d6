"""The media port's connection caps: refuse at the total cap, evict the oldest pending
connection at the pending cap, never evict a proven one."""

from __future__ import annotations

import pytest
import trio

from api.media_server import media_connection_caps
from engine.connection_slots import ConnectionSlots, Slot


async def test_over_the_total_cap_a_newcomer_is_refused_and_nobody_is_evicted() -> None:
    slots = ConnectionSlots(max_open=3, max_pending=2)
    call = slots.open()
    assert call is not None
    call.prove()
    strangers = [slots.open(), slots.open()]
    assert slots.open() is None  # 3 open: refused, though pending is full too
    assert [s.evicted for s in strangers if s] == [False, False]
    assert not call.evicted
    call.release()  # the call ended: room for one more, and pending is still full
    newcomer = slots.open()
    assert newcomer is not None
    assert [s.evicted for s in strangers if s] == [True, False]  # the oldest made room
    stats = slots.statistics()
    assert (stats.open, stats.pending, stats.refused_total, stats.evicted_total) == (3, 2, 1, 1)
    assert (stats.peak_open, stats.max_open, stats.max_pending) == (3, 3, 2)


async def test_at_the_pending_cap_the_oldest_pending_connection_is_evicted() -> None:
    slots = ConnectionSlots(max_open=10, max_pending=3)
    strangers = [slots.open() for _ in range(3)]
    assert all(isinstance(s, Slot) for s in strangers)
    caller = slots.open()
    assert caller is not None
    oldest = strangers[0]
    assert oldest is not None
    assert oldest.evicted
    assert oldest.cancel_scope.cancel_called
    assert [s.evicted for s in strangers[1:] if s] == [False, False]
    caller.prove()
    for _ in range(5):  # more strangers push each other out, never the proven caller
        assert slots.open() is not None
    assert not caller.evicted
    assert not caller.cancel_scope.cancel_called
    assert slots.statistics().pending == 3
    assert slots.statistics().peak_pending == 3


async def test_an_evicted_slot_cannot_be_proven_and_release_is_idempotent() -> None:
    slots = ConnectionSlots(max_open=5, max_pending=1)
    old, new = slots.open(), slots.open()
    assert old is not None
    assert new is not None
    old.prove()  # too late: a newcomer took its place
    assert not old.proven
    old.release()
    old.release()
    new.release()
    assert slots.statistics().open == 0


async def test_eviction_cancels_what_the_evicted_connection_was_waiting_for() -> None:
    slots = ConnectionSlots(max_open=5, max_pending=1)
    stranger = slots.open()
    assert stranger is not None
    with stranger.cancel_scope:
        slots.open()  # a newcomer
        await trio.sleep_forever()  # the stranger's slow handshake: cancelled at once
    assert stranger.cancel_scope.cancelled_caught


def test_the_caps_follow_max_concurrent_calls() -> None:
    assert media_connection_caps(1) == (17, 16)  # pending: at least 16
    assert media_connection_caps(100) == (150, 50)  # calls + half of them pending
    assert media_connection_caps(1000) == (1500, 500)
    with pytest.raises(ValueError, match="max_pending"):
        ConnectionSlots(max_open=1, max_pending=2)
