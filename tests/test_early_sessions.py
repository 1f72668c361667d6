"""The early-sessions actor: model sockets opened at webhook time, handed to the call
actor once, closed when unused (under Trio's mock clock, over in-memory transports to
the real simulated model)."""

from __future__ import annotations

import trio
import trio.testing

from actors.early_sessions import EarlySessions
from actors.model_link import ModelEndpoint
from engine.early_requests import DiscardEarly, EarlyRequest, OpenEarly, take_early
from engine.lifecycle import StopSignal
from engine.mailbox import Mailbox, OverflowPolicy
from engine.simulator.model import SimulatedModel

HOLD_S = 60.0


async def started(
    nursery: trio.Nursery, *, silent_model: bool = False
) -> tuple[EarlySessions, Mailbox[EarlyRequest], SimulatedModel, StopSignal]:
    model = SimulatedModel()

    async def open_stream(host: str, port: int) -> trio.abc.Stream:
        ours, theirs = trio.testing.memory_stream_pair()
        if not silent_model:
            nursery.start_soon(model.serve_stream, theirs)
        return ours

    endpoint = ModelEndpoint(
        "ws://model.test/v1/realtime", "gpt-realtime", "sk", open_stream=open_stream
    )
    inbox: Mailbox[EarlyRequest] = Mailbox("early-sessions", 8, OverflowPolicy.DROP_NEWEST)
    actor = EarlySessions(inbox, lambda: endpoint, hold_s=HOLD_S, max_held=2)
    stop = StopSignal()
    await nursery.start(actor.run, stop)
    return actor, inbox, model, stop


async def test_a_session_opened_early_is_handed_over_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        actor, inbox, model, stop = await started(nursery)
        inbox.send_nowait(OpenEarly("CA1"))
        first = await take_early(inbox, "CA1", connect_timeout_s=5)  # may still be opening
        second = await take_early(inbox, "CA1", connect_timeout_s=5)
        assert first is not None
        batch = await first.receive_batch()  # the session is live: session.created waits
        await first.aclose()
        stop.request()
    assert '"session.created"' in str(batch[0])
    assert second is None  # a second stream for the call gets nothing (it connects itself)
    early = actor.statistics()
    assert (early.opened_total, early.taken_total, early.held) == (1, 1, 0)
    assert model.statistics().sessions_total == 1


async def test_an_unused_session_is_closed_when_its_hold_ends_or_the_call_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        actor, inbox, model, stop = await started(nursery)
        inbox.send_nowait(OpenEarly("CA-expires"))
        inbox.send_nowait(OpenEarly("CA-hung-up"))
        inbox.send_nowait(OpenEarly("CA-over-the-limit"))  # max_held is 2
        await trio.sleep(1.0)
        assert model.statistics().sessions_open == 2
        inbox.send_nowait(DiscardEarly("CA-hung-up"))  # the status callback said so
        await trio.sleep(1.0)
        assert model.statistics().sessions_open == 1
        await trio.sleep(HOLD_S)
        assert model.statistics().sessions_open == 0
        late = await take_early(inbox, "CA-expires", connect_timeout_s=5)
        stop.request()
    assert late is None
    assert actor.statistics().expired_total == 1
    assert actor.statistics().held == 0


async def test_sessions_still_held_are_closed_when_the_engine_stops(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        actor, inbox, model, stop = await started(nursery)
        inbox.send_nowait(OpenEarly("CA1"))
        await trio.sleep(1.0)
        assert model.statistics().sessions_open == 1
        stop.request()
        await trio.sleep(1.0)
        assert model.statistics().sessions_open == 0
    assert actor.statistics().held == 0


async def test_a_model_that_never_answers_leaves_nothing_to_take(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        actor, inbox, _, stop = await started(nursery, silent_model=True)
        inbox.send_nowait(OpenEarly("CA1"))
        taken = await take_early(inbox, "CA1", connect_timeout_s=10)  # the default timeout
        stop.request()
    assert taken is None
    assert actor.statistics().failed_total == 1
    assert actor.statistics().held == 0
