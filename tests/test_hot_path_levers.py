"""The per-frame levers (CALLER_FRAMES_PER_APPEND, MARK_EVERY_DELTAS) through the real
actor, WebSocket layer and simulated model under Trio's mock clock: fewer messages, and
nothing the caller says or hears is lost, reordered or left unmarked."""

from __future__ import annotations

import base64
import itertools
from typing import Any

import pytest
import trio
import trio.testing

from engine.simulator.model import SimulatedModel
from engine.simulator.mulaw import FRAME_BYTES
from engine.simulator.twilio_peer import TwilioPeer
from engine.twilio_codec import join_payloads
from tests.call_harness import run_call
from tests.test_call_clock import PROJECT, chatty_caller

FRAMES = 10


def distinct_audio() -> bytes:
    """Ten frames, each a different byte value, so each one's echo is recognisable."""
    return b"".join(bytes([0x10 + n]) * FRAME_BYTES for n in range(FRAMES))


async def speaks_then_hangs_up(twilio: TwilioPeer) -> None:
    await trio.sleep(5)  # past the greeting
    await twilio.speak(distinct_audio())
    await trio.sleep(5)
    await twilio.hang_up()


def echoed_frames(received: list[dict[str, Any]]) -> list[bytes]:
    audio = b"".join(
        base64.b64decode(e["media"]["payload"]) for e in received if e["event"] == "media"
    )
    spoken = distinct_audio()
    start = audio.find(spoken[:FRAME_BYTES])
    return [audio[i : i + FRAME_BYTES] for i in range(start, start + len(spoken), FRAME_BYTES)]


async def test_two_frames_per_append_halve_the_appends_and_lose_no_audio(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events = {}
    for frames in (1, 2):
        model = SimulatedModel(echo=True)
        run = await run_call(
            PROJECT | {"max_call_s": 300}, speaks_then_hangs_up, model=model,
            frames_per_append=frames,
        )  # fmt: skip
        assert run.crash is None
        assert model.statistics().violations_total == 0
        # Every frame the caller said came back, whole and in order.
        expected = [bytes([0x10 + n]) * FRAME_BYTES for n in range(FRAMES)]
        assert echoed_frames(run.twilio.received) == expected
        events[frames] = model.statistics().client_events_total
    assert events[1] - events[2] == FRAMES // 2  # five appends fewer


@pytest.mark.parametrize("every", [2, 3])
async def test_a_mark_every_few_deltas_still_marks_the_end_of_every_answer(
    autojump_clock: trio.testing.MockClock, every: int
) -> None:
    """The max-duration goodbye must be heard to the end before the hang-up: the mark
    after an answer's last delta goes even when it is not an ``every``-th one."""
    run = await run_call(PROJECT, chatty_caller, mark_every_deltas=every)
    received = run.twilio.received
    media = sum(1 for e in received if e["event"] == "media")
    marks = sum(1 for e in received if e["event"] == "mark")
    assert (run.record.status, run.record.end_reason) == ("completed", "max_duration")
    assert run.record.duration_s is not None
    assert 60 <= run.record.duration_s < 62  # no wait for a mark that never came
    assert received[-1]["event"] == "mark"
    assert marks < media / every + 5  # about one in ``every``, plus each answer's last
    # No media is ever left unmarked before something else is sent.
    for before, after in itertools.pairwise(received):
        if before["event"] == "media" and after["event"] not in ("media", "mark"):
            pytest.fail(f"media followed by {after['event']} with no mark between")


def test_joined_payloads_are_the_frames_audio_in_order() -> None:
    frames = [bytes([n]) * FRAME_BYTES for n in range(3)]
    joined = join_payloads([base64.b64encode(f).decode() for f in frames])
    assert joined is not None
    assert base64.b64decode(joined) == b"".join(frames)
    assert join_payloads(["AAAA", "not base64!"]) is None
