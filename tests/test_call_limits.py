"""The call's silence and duration limits, as the pure state machine they are."""

from __future__ import annotations

from actors.call.limits import CallLimits


def test_silence_prompts_once_then_ends() -> None:
    limits = CallLimits(silence_timeout_s=10, max_call_s=900, started_at_s=100)
    assert limits.next_check_s() == 110
    assert limits.due(109.9) is None
    assert limits.due(110) == "prompt_silence"
    assert limits.next_check_s() == 120  # the prompt restarts the wait
    assert limits.due(119) is None
    assert limits.due(120) == "end_silence"
    assert limits.due(500) is None  # ending: nothing more


def test_any_sound_resets_the_silence_and_the_prompt() -> None:
    limits = CallLimits(silence_timeout_s=10, max_call_s=900, started_at_s=0)
    assert limits.due(10) == "prompt_silence"
    limits.activity(15, caller=True)  # the caller answered
    assert limits.due(24) is None
    assert limits.due(25) == "prompt_silence"  # a fresh prompt, not the end


def test_duration_warns_before_the_end_and_then_ends() -> None:
    limits = CallLimits(silence_timeout_s=1000, max_call_s=300, started_at_s=0)
    assert limits.next_check_s() == 270
    assert limits.due(270) == "warn_duration"
    assert limits.due(280) is None  # warned once
    assert limits.next_check_s() == 300
    assert limits.due(300) == "end_duration"


def test_the_end_of_the_call_wins_over_silence() -> None:
    limits = CallLimits(silence_timeout_s=5, max_call_s=30, started_at_s=0, warn_before_end_s=0)
    limits.activity(26, caller=True)
    assert limits.due(31) == "end_duration"


def test_the_models_own_voice_delays_but_does_not_answer_the_prompt() -> None:
    limits = CallLimits(silence_timeout_s=10, max_call_s=900, started_at_s=0)
    assert limits.due(10) == "prompt_silence"
    limits.activity(12, caller=False)  # "Are you still there?" plays
    assert limits.due(21) is None
    assert limits.due(22) == "end_silence"
