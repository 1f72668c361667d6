"""Records that tell the truth (issue 13, point 5): a crashed actor, a transfer that
could not happen, a function still running at the hang-up. Whole calls under Trio's mock
clock (tests/call_harness.py), or against the whole engine and a real PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors.call.core import CallCore
from actors.store.db import open_database
from engine.simulator.model import SimulatedModel
from engine.simulator.mulaw import silence, tone
from engine.simulator.twilio_peer import TwilioPeer
from tests.call_harness import run_call
from tests.function_backend import FunctionBackend, TwilioRestStandIn
from tests.helpers import running_engine, sid
from tests.test_call_e2e import BOOKING_PROJECT, answered_call, wait_for_final

PROJECT: dict[str, Any] = {
    "id": "smith-plumbing",
    "name": "Smith Plumbing",
    "timezone": "America/Chicago",
}
EMERGENCY = PROJECT | {
    "instructions": "Handle after-hours calls. [scenario: emergency]",
    "on_call_number": "+15551234567",
}


async def test_a_crashed_call_actor_records_the_call_failed_with_the_error(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    def a_bug(*args: object) -> None:
        raise RuntimeError("a bug in the call")

    # A fault put into the core (what a bug would do), not into the actor under test.
    monkeypatch.setattr(CallCore, "_response_done", a_bug)

    async def caller(twilio: TwilioPeer) -> None:
        await trio.sleep_forever()

    run = await run_call(PROJECT, caller)
    assert run.crash is not None  # the calls group still hears of the crash
    assert (run.record.status, run.record.end_reason) == ("failed", "engine_error")
    assert run.record.error == "ExceptionGroup"  # the nursery's, holding the RuntimeError


async def test_a_transfer_without_a_twilio_account_is_recorded_and_alerted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def caller(twilio: TwilioPeer) -> None:
        await trio.sleep(3)
        await twilio.speak(silence(100) + tone(400) + silence(700))
        await trio.sleep(15)
        await twilio.hang_up()
        await trio.sleep_forever()

    run = await run_call(EMERGENCY, caller, model=SimulatedModel(), twilio_rest=None)
    record = run.record
    assert (record.status, record.end_reason, record.intent) == (
        "failed",
        "transfer_failed",
        "emergency",
    )
    assert record.error == "transfers need a Twilio account (TWILIO_ACCOUNT_SID)"
    transfer_alerts = [a for a in run.alerts if a.title == "Transfer failed"]
    assert [a.type for a in transfer_alerts] == ["twilioError"]


async def test_a_transfer_twilio_refuses_is_explained_to_the_caller_and_recorded(
    fresh_database: str, tmp_path: Path
) -> None:
    twilio = TwilioRestStandIn(status=500)
    async with trio.open_nursery() as nursery:
        rest_url = await nursery.start(twilio.serve)
        async with running_engine(
            fresh_database,
            tmp_path,
            MEDIA_PORT="0",
            TWILIO_ACCOUNT_SID="AC" + "ab" * 16,
            TWILIO_API_BASE_URL=rest_url,
        ) as engine:
            peer, parameters = await answered_call(engine, EMERGENCY, sid(961))
            with trio.fail_after(40):
                await peer.start(parameters)
                await peer.listen(until_silent_s=1.0)
                await peer.speak(silence(100) + tone(400) + silence(700))
                await peer.listen(until_silent_s=4.0)  # the engine tries, then explains
                record = await wait_for_final(fresh_database, sid(961))
            await peer.aclose()
        nursery.cancel_scope.cancel()
    assert len(twilio.received) == 1  # the transfer was attempted
    assert (record["status"], record["end_reason"]) == ("failed", "transfer_failed")
    assert record["error"] == "Twilio refused the call update: HTTP 500"
    said = [t["text"] for t in json.loads(record["transcript"]) if t["role"] == "assistant"]
    assert said[-1].startswith("I'm sorry, I could not connect you.")
    assert "will call you back" in said[-1]


async def test_a_function_still_running_at_the_hang_up_is_recorded_cancelled(
    fresh_database: str, tmp_path: Path
) -> None:
    backend = FunctionBackend(
        {
            "get_slots": (200, b'{"slots": [{"id": "slot-1", "time": "09:00"}]}', 0.0),
            "book_appointment": (200, b'{"booked": true}', 30.0),  # still running at hang-up
        }
    )
    async with trio.open_nursery() as nursery:
        url = await nursery.start(backend.serve)
        async with running_engine(fresh_database, tmp_path, MEDIA_PORT="0") as engine:
            project = BOOKING_PROJECT | {"functionUrl": url, "functionTimeoutS": 20}
            peer, parameters = await answered_call(engine, project, sid(962))
            with trio.fail_after(60):
                await peer.start(parameters)
                await peer.listen(until_silent_s=1.0)
                await peer.speak(silence(100) + tone(400) + silence(700))  # get_slots
                await peer.listen(until_silent_s=2.5)
                await peer.speak(silence(100) + tone(400) + silence(700))  # book it
                while len(backend.received) < 2:  # noqa: ASYNC110 - a real HTTP peer
                    await trio.sleep(0.05)
                await trio.sleep(1.0)
                await peer.hang_up()
                record = await wait_for_final(fresh_database, sid(962))
                async with open_database(fresh_database, connect_timeout_s=5) as db:
                    rows = await db.fetch(
                        "SELECT name, outcome, latency_ms, error FROM function_calls ORDER BY at",
                        timeout_s=5,
                    )
            await peer.aclose()
        nursery.cancel_scope.cancel()
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hung_up")
    assert [(r["name"], r["outcome"]) for r in rows] == [
        ("get_slots", "ok"),
        ("book_appointment", "cancelled"),
    ]
    assert 900 <= rows[1]["latency_ms"] < 20_000
    assert "the call ended" in rows[1]["error"]
