"""The real API's everyday faults, played by the harsher simulated model against the
whole engine over real sockets (issue 13's "done when"): failed responses, a session
whose audio format did not take effect, a late caller transcription, a function call
whose ``arguments.done`` carries no name. Errors with ``code: null`` mid-call are played
under the mock clock (tests/test_call_clock.py), where the call's minutes cost nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio

from engine.simulator.mulaw import silence, tone
from tests.helpers import running_engine, sid
from tests.test_call_e2e import answered_call, wait_for_final
from tests.test_call_faults import event_log

PROJECT: dict[str, Any] = {
    "id": "smith-plumbing",
    "name": "Smith Plumbing",
    "timezone": "America/Chicago",
}
TURN = silence(100) + tone(400) + silence(700)  # one caller turn the model hears


def said(record: dict[str, Any], role: str = "assistant") -> list[str]:
    return [t["text"] for t in json.loads(record["transcript"]) if t["role"] == role]


def media(events: list[dict[str, Any]]) -> int:
    return sum(1 for e in events if e["event"] == "media")


async def test_failed_responses_are_retried_with_a_one_moment_and_the_caller_answered(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path, MEDIA_PORT="0") as engine:
        model = engine.simulated_model
        assert model is not None
        peer, parameters = await answered_call(engine, PROJECT, sid(972))
        with trio.fail_after(40):
            await peer.start(parameters)
            await peer.listen(until_silent_s=1.0)  # the greeting
            model.fail_responses(2, "rate_limit_exceeded")
            await peer.speak(TURN)
            began_s = trio.current_time()
            answer = await peer.listen(until_silent_s=2.5)
            waited_s = trio.current_time() - began_s
            await peer.hang_up()
            record = await wait_for_final(fresh_database, sid(972))
            await peer.aclose()
        alerts = await event_log(fresh_database, sid(972))
    assert media(answer) > 0
    lines = said(record)
    # The immediate retry failed too: "one moment", then the answer after 1 s.
    assert lines[1:] == [
        "One moment, please.",
        "I understand. Can you tell me a little more about the problem?",
    ]
    assert waited_s < 10
    # Alerted (identical alerts within a minute are folded into one with a count).
    failed = [m for t, m in alerts if t == "openaiError" and "Model response failed" in m]
    assert failed[0].startswith("Model response failed: rate_limit_exceeded")
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hung_up")


async def test_a_model_whose_responses_keep_failing_ends_the_call_failed(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path, MEDIA_PORT="0") as engine:
        model = engine.simulated_model
        assert model is not None
        model.fail_responses(100, "server_error")  # the greeting's and every retry's
        peer, parameters = await answered_call(engine, PROJECT, sid(973))
        with trio.fail_after(40):
            await peer.start(parameters)
            record = await wait_for_final(fresh_database, sid(973))
            await peer.aclose()
    assert (record["status"], record["end_reason"]) == (
        "failed",
        "model_response_failed: server_error",
    )


async def test_a_session_whose_output_format_did_not_take_effect_ends_politely_without_static(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path, MEDIA_PORT="0") as engine:
        model = engine.simulated_model
        assert model is not None
        model.ignore_output_format = True  # session.updated says audio/pcm at 24 kHz
        peer, parameters = await answered_call(engine, PROJECT, sid(974))
        with trio.fail_after(40):
            await peer.start(parameters)
            heard = await peer.listen(until_silent_s=2.0)
            record = await wait_for_final(fresh_database, sid(974))
            await peer.aclose()
        alerts = await event_log(fresh_database, sid(974))
    assert media(heard) == 0  # no PCM played to the caller as mu-law
    assert (record["status"], record["end_reason"]) == ("failed", "model_session_mismatch")
    assert any("output audio is 'audio/pcm'" in message for _, message in alerts)


async def test_a_late_caller_transcription_keeps_its_place_in_the_transcript(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path, MEDIA_PORT="0") as engine:
        model = engine.simulated_model
        assert model is not None
        model.late_transcription = True
        peer, parameters = await answered_call(engine, PROJECT, sid(975))
        with trio.fail_after(40):
            await peer.start(parameters)
            await peer.listen(until_silent_s=1.0)
            for _ in range(2):
                await peer.speak(TURN)
                await peer.listen(until_silent_s=1.5)
            await peer.hang_up()
            record = await wait_for_final(fresh_database, sid(975))
            await peer.aclose()
    roles = [t["role"] for t in json.loads(record["transcript"])]
    assert roles == ["assistant", "caller", "assistant", "caller", "assistant"]


async def test_a_function_call_without_a_name_in_arguments_done_still_runs(
    fresh_database: str, tmp_path: Path
) -> None:
    project = PROJECT | {"instructions": "Handle after-hours calls. [scenario: emergency]"}
    async with running_engine(fresh_database, tmp_path, MEDIA_PORT="0") as engine:
        model = engine.simulated_model
        assert model is not None
        model.omit_function_name = True
        peer, parameters = await answered_call(engine, project, sid(976))
        with trio.fail_after(40):
            await peer.start(parameters)
            await peer.listen(until_silent_s=1.0)
            await peer.speak(TURN)
            await peer.listen(until_silent_s=2.0)
            await peer.hang_up()
            record = await wait_for_final(fresh_database, sid(976))
            await peer.aclose()
    assert record["intent"] == "emergency"  # classify_call ran, named by its item
