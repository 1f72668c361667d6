"""Call limits end to end under Trio's mock clock: the call actor, the WebSocket layer and
the simulated model are real; minutes of call pass in milliseconds (tests/call_harness)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from engine.simulator.model import SimulatedModel
from engine.simulator.model_statistics import Recent
from engine.simulator.mulaw import silence, tone
from engine.simulator.twilio_peer import TwilioPeer
from tests.call_harness import run_call

PROJECT: dict[str, Any] = {
    "id": "smith-plumbing",
    "name": "Smith Plumbing",
    "timezone": "America/Chicago",
    "max_call_s": 60,
    "silence_timeout_s": 30,
}


async def chatty_caller(twilio: TwilioPeer) -> None:
    """Says something every 25 s, so silence never ends the call."""
    while True:
        await trio.sleep(25)
        await twilio.speak(silence(100) + tone(400) + silence(700))


async def test_a_call_at_its_maximum_duration_is_warned_then_ended_politely(
    autojump_clock: trio.testing.MockClock,
) -> None:
    run = await run_call(PROJECT, chatty_caller)
    record = run.record
    said = [t["text"] for t in record.transcript or [] if t["role"] == "assistant"]
    assert (record.status, record.end_reason) == ("completed", "max_duration")
    assert record.duration_s is not None
    assert 60 <= record.duration_s < 62  # the goodbye plays, then the call ends
    assert "We will need to wrap up in a moment." in said  # 30 s before the end
    assert said[-1] == "I am sorry, we have reached the time limit for this call. Goodbye."
    # The goodbye was sent to the caller before the hang-up.
    assert run.twilio.received[-1]["event"] == "mark"
    assert run.model.statistics().sessions_open == 0
    assert run.model.statistics().violations_total == 0


async def test_a_caller_who_never_speaks_is_asked_once_then_the_call_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def silent(twilio: TwilioPeer) -> None:
        await trio.sleep_forever()

    run = await run_call(PROJECT | {"max_call_s": 300}, silent)
    record = run.record
    said = [t["text"] for t in record.transcript or [] if t["role"] == "assistant"]
    assert (record.status, record.end_reason) == ("completed", "silence_timeout")
    assert said[1] == "Are you still there?"
    assert said[2].startswith("I have not heard anything, so I will hang up now.")
    assert record.duration_s is not None
    assert 60 <= record.duration_s < 62  # 30 s to the prompt, 30 s more to the goodbye


async def test_a_long_call_renews_its_model_session_before_each_cap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    model = SimulatedModel()
    model.session_max_s = 600.0  # the server ends a session after 10 min
    # Every restored text, not only the last RECENT_EVENTS: the first one is checked below.
    model.tally.assistant_texts = Recent[str](bound=10_000)
    project = PROJECT | {"max_call_s": 1800}
    run = await run_call(project, chatty_caller, model=model, session_max_s=600.0)
    record = run.record
    assert (record.status, record.end_reason) == ("completed", "max_duration")
    assert model.statistics().sessions_expired == 0  # each renewed before the server's cap
    # Renewed at ~540 s, ~1080 s and ~1620 s (in the last tenth of each session).
    assert model.statistics().sessions_total == 4
    assert [alert.type for alert in run.alerts] == []  # a renewal is not a fault
    # Each new session was given the conversation so far, in order, the greeting first.
    greeting = "Thank you for calling Smith Plumbing. How can I help?"
    assert model.statistics().assistant_texts[0] == greeting
    # Every caller turn was answered, across the renewals.
    roles = [t["role"] for t in record.transcript or []]
    assert roles.count("caller") >= 60
    assert roles.count("assistant") > roles.count("caller")


class TimedModel(SimulatedModel):
    """The simulated model, noting when each session's connection arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.connected_at_s: list[float] = []

    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        self.connected_at_s.append(trio.current_time())
        await super().serve_stream(stream)


async def test_a_renewal_waits_for_the_caller_to_finish_and_starts_the_moment_the_call_is_quiet(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A 600 s session is renewed from 540 s on, at the first quiet moment. The caller is
    # speaking from 539 s to 540.37 s, and the answer takes no virtual time here: the call
    # is quiet again at 540.37 s, and the new session is asked for then (a poll would ask
    # up to a period later; a renewal that did not wait, at 540 s).
    model = TimedModel()

    async def caller(twilio: TwilioPeer) -> None:
        for _ in range(21):  # up to 525 s: silence never ends the call
            await trio.sleep(25)
            await twilio.speak(silence(100) + tone(400) + silence(700))
        await trio.sleep_until(model.connected_at_s[0] + 539.0)
        await twilio.speak(silence(100) + tone(400))  # speaking...
        await trio.sleep_until(model.connected_at_s[0] + 540.37)
        await twilio.speak(silence(700))  # ...until now: the turn ends, the model answers
        await trio.sleep(20)
        await twilio.hang_up()

    run = await run_call(PROJECT | {"max_call_s": 900}, caller, model=model, session_max_s=600.0)
    first_s, renewed_s = model.connected_at_s
    assert renewed_s - first_s == pytest.approx(540.37, abs=1e-6)
    assert model.statistics().sessions_expired == 0
    assert run.record.end_reason == "caller_hung_up"
    roles = [t["role"] for t in run.record.transcript or []]
    assert roles[-2:] == ["caller", "assistant"]  # the last turn was answered


async def test_a_session_the_server_expires_unannounced_is_replaced_and_the_call_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    model = SimulatedModel()
    model.session_max_s = 100.0  # ends sessions at 100 s with session_expired...
    model.announce_expiry = False  # ...without saying so in session.created
    run = await run_call(PROJECT | {"max_call_s": 180}, chatty_caller, model=model)
    record = run.record
    assert model.statistics().sessions_expired == 1
    assert model.statistics().sessions_total == 2
    assert (record.status, record.end_reason) == ("completed", "max_duration")
    assert [(a.type, a.title) for a in run.alerts] == [("openaiError", "Model session expired")]
    roles = [t["role"] for t in record.transcript or []]
    assert roles.count("caller") >= 6  # turns before and after the expiry were answered


async def test_the_projects_voice_detection_settings_reach_the_model(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def hangs_up_soon(twilio: TwilioPeer) -> None:
        await trio.sleep(2)
        await twilio.hang_up()

    project = PROJECT | {"vad_threshold": 0.8, "vad_silence_ms": 900, "vad_prefix_padding_ms": 100}
    run = await run_call(project, hangs_up_soon)
    detection = run.model.statistics().turn_detection
    assert detection is not None
    assert (
        detection["threshold"],
        detection["silence_duration_ms"],
        detection["prefix_padding_ms"],
    ) == (0.8, 900, 100)
    assert run.record.end_reason == "caller_hung_up"


def code_null(message: str) -> dict[str, Any]:
    """An error as the live API sends some: ``invalid_request_error`` with no code at
    all (a refused truncate; a transient failure of its own), every field of the GA
    shape present."""
    error = {"type": "invalid_request_error", "code": None, "message": message}
    return {
        "type": "error",
        "event_id": "event_X",
        "error": error | {"param": None, "event_id": None},
    }


CODE_NULL_TRUNCATE = code_null("Audio content of 1200ms is already shorter than 2000ms")
CODE_NULL_SERVER = code_null("The server had an error while processing your request.")
SERVER_ERROR = {"type": "error", "error": {"type": "server_error", "message": "try again"}}


async def test_recoverable_model_errors_leave_the_call_going_to_the_callers_hang_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two ``code: null`` errors and two ``server_error`` mid-call: the call goes on, the
    caller is still answered, and hangs up; the record is completed, and one warning
    goes out for the four (an alert per episode, not per error)."""
    model = SimulatedModel()
    answered_after_errors: list[int] = []

    async def caller(twilio: TwilioPeer) -> None:
        await trio.sleep(5)
        model.inject(CODE_NULL_TRUNCATE)
        model.inject(CODE_NULL_SERVER)
        model.inject(SERVER_ERROR)
        model.inject(SERVER_ERROR)
        await twilio.speak(silence(100) + tone(400) + silence(700))
        heard_before = sum(1 for e in twilio.received if e["event"] == "media")
        await trio.sleep(10)
        answered_after_errors.append(
            sum(1 for e in twilio.received if e["event"] == "media") - heard_before
        )
        await twilio.hang_up()
        await trio.sleep_forever()

    run = await run_call(PROJECT | {"max_call_s": 300}, caller, model=model)
    record = run.record
    assert (record.status, record.end_reason) == ("completed", "caller_hung_up")
    assert answered_after_errors[0] > 0  # the model answered the caller after the errors
    warnings = [(a.type, a.title, a.message) for a in run.alerts if a.title == "Model error"]
    assert warnings == [("openaiError", "Model error", "server_error: try again; the call goes on")]


async def test_a_fatal_model_error_ends_the_call_as_failed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    model = SimulatedModel()
    quota = {"type": "error", "error": {"type": "insufficient_quota", "code": "insufficient_quota",
                                        "message": "You exceeded your current quota"}}  # fmt: skip

    async def caller(twilio: TwilioPeer) -> None:
        await trio.sleep(2)
        model.inject(quota)
        await twilio.speak(silence(100))
        await trio.sleep_forever()

    run = await run_call(PROJECT | {"max_call_s": 300}, caller, model=model)
    assert (run.record.status, run.record.end_reason) == (
        "failed",
        "model_error: insufficient_quota",
    )
