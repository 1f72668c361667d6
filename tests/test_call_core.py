"""The call's conversation core, replayed against event sequences from the GA reference
and from sessions users of other bridges reported (tests/fixtures/realtime_sequences.py).
No sockets, no clock: the core is pure, so each test is the sequence and its outcome."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import pytest

from actors.call.core import (
    INTERRUPTED_OUTPUT,
    Action,
    CallCore,
    ClearCaller,
    End,
    Expiry,
    Note,
    Replace,
    RunTools,
    ScheduleRetry,
    Send,
)
from actors.call.responses import MAX_FAILURES, SAY_ONE_MOMENT, Request
from actors.call.tools import ToolCall
from engine.realtime_codec import AudioDelta, decode_server_event
from engine.realtime_schema import (
    SchemaViolation,
    validate_client_event,
    validate_server_event,
)
from tests.fixtures import realtime_sequences as seq

UNIX_NOW_S = 1_800_000_000.0
ALL_SEQUENCES = {
    name: value
    for name, value in vars(seq).items()
    if name.isupper() and isinstance(value, dict) and "events" in value
}


def replay(core: CallCore, events: list[dict[str, Any]], now_s: float = 1.0) -> list[Action]:
    actions: list[Action] = []
    for entry in events:
        if "call" in entry:
            if entry["call"] == "ask":
                actions += core.ask(Request(entry["instructions"]))
            elif entry["call"] == "mark":
                core.mark(entry["name"])
            continue
        event = decode_server_event(json.dumps(entry))
        if isinstance(event, AudioDelta):
            core.audio(event, 100)
        else:
            actions += core.event(event, now_s, UNIX_NOW_S)
    return actions


def sent(actions: Sequence[Action]) -> list[dict[str, Any]]:
    return [json.loads(a.data) for a in actions if isinstance(a, Send)]


def new_core() -> CallCore:
    return CallCore(voice="marin", started_at_s=0.0)


@pytest.mark.parametrize("name", sorted(ALL_SEQUENCES))
def test_every_fixture_event_is_a_valid_ga_server_event(name: str) -> None:
    for entry in ALL_SEQUENCES[name]["events"]:
        if entry.get("type") == "response.function_call_arguments.done" and "name" not in entry:
            # As the reference's own example: the one deviation from the SDK's types.
            with pytest.raises(SchemaViolation, match="name"):
                validate_server_event(entry)
        elif "type" in entry:
            validate_server_event(entry)
    assert ALL_SEQUENCES[name]["source"]


def test_a_ga_turn_gives_the_transcript_and_the_usage() -> None:
    core = new_core()
    actions = replay(core, seq.GA_TURN["events"])
    assert [a for a in actions if not isinstance(a, Note)] == []
    assert [(t["role"], t["text"]) for t in core.transcript.turns()] == [
        ("caller", "My basement is flooding."),
        ("assistant", "I am sending someone now."),
    ]
    assert core.usage["total_tokens"] == 1377
    assert core.usage["input_token_details"]["cached_tokens_details"]["text_tokens"] == 1088
    assert core.usage["transcription"]["audio_tokens"] == 20
    assert core.usage["transcription"]["output_tokens"] == 6
    assert core.responses.idle


def test_late_transcriptions_keep_the_conversation_order() -> None:
    core = new_core()
    replay(core, seq.LATE_TRANSCRIPTION["events"])
    assert [(t["role"], t["text"]) for t in core.transcript.turns()] == [
        ("caller", "My basement is flooding."),
        ("assistant", "Which street are you on?"),
        ("caller", "Elm Street."),
        ("assistant", "Thank you."),
    ]


def test_the_history_restored_into_a_new_session_is_in_conversation_order() -> None:
    core = new_core()
    replay(core, seq.LATE_TRANSCRIPTION["events"])
    restored = sent(core.restored())
    texts = [(e["item"]["role"], e["item"]["content"][0]["text"]) for e in restored]
    assert texts == [
        ("user", "My basement is flooding."),
        ("assistant", "Which street are you on?"),
        ("user", "Elm Street."),
        ("assistant", "Thank you."),
    ]
    for event in restored:
        validate_client_event(event)


def test_a_refused_truncate_with_code_null_is_a_quiet_race() -> None:
    actions = replay(new_core(), seq.TRUNCATE_REFUSED["events"])
    assert len(actions) == 1
    note = actions[0]
    assert isinstance(note, Note)
    assert (note.level, note.alert) == ("info", False)
    assert "already shorter than" in note.message


@pytest.mark.parametrize("name", ["ACTIVE_RESPONSE_RACE", "ACTIVE_RESPONSE_RACE_CODE_NULL"])
def test_a_refused_response_create_is_sent_again_after_the_active_one(name: str) -> None:
    core = new_core()
    events = ALL_SEQUENCES[name]["events"]
    first = sent(replay(core, events[:1]))
    assert [e["event_id"] for e in first] == ["r1"]
    meanwhile = replay(core, events[1:-1])
    assert sent(meanwhile) == []  # not at once: the other response is still running
    again = sent(replay(core, events[-1:]))
    assert len(again) == 1
    assert again[0]["response"]["instructions"] == events[0]["instructions"]
    assert again[0]["event_id"] != "r1"
    validate_client_event(again[0])


def test_a_second_response_is_queued_until_the_first_is_done() -> None:
    core = new_core()
    assert len(sent(core.ask(Request("Greet.")))) == 1
    assert core.ask(Request("Ask if still there.")) == []
    replay(core, [seq._ev("response.created", 1, response=seq._response("resp_1", "in_progress"))])
    done = replay(
        core, [seq._ev("response.done", 2, response=seq._response("resp_1", "completed"))]
    )
    assert [e["response"]["instructions"] for e in sent(done)] == ["Ask if still there."]


def test_a_failed_response_is_retried_then_the_call_ends_after_repeated_failures() -> None:
    core = new_core()
    actions = replay(core, seq.FAILED_RESPONSE["events"])
    notes = [a for a in actions if isinstance(a, Note)]
    assert [(n.title, n.alert) for n in notes] == [("Model response failed", True)]
    assert "rate_limit_exceeded" in notes[0].message
    retries = [a for a in actions if isinstance(a, ScheduleRetry)]
    assert [r.retry.after_s for r in retries] == [0.0]  # the first retry is immediate
    assert sent(actions) == []
    again = sent(core.retry_due(retries[0].retry))
    assert len(again) == 1
    assert "response" not in again[0]  # the session's own answer

    # The second failure is not retried at once: the caller hears "one moment" first.
    actions = replay(core, seq.failed_response(30, "resp_F2"))
    filler = sent(actions)
    assert filler[0]["response"] == {"instructions": SAY_ONE_MOMENT, "conversation": "none"}
    validate_client_event(filler[0])
    retry = next(a for a in actions if isinstance(a, ScheduleRetry)).retry
    assert retry.after_s == 1.0
    replay(core, [seq._ev("response.created", 40, response=seq._response("resp_M", "in_progress"))])
    assert core.retry_due(retry) == []  # queued behind the filler
    done = replay(
        core, [seq._ev("response.done", 41, response=seq._response("resp_M", "completed"))]
    )
    assert len(sent(done)) == 1  # the retry, now the filler has played

    for n in range(MAX_FAILURES - 2):  # the fillers play; the failures go on
        actions = replay(core, seq.failed_response(50 + 10 * n, f"resp_G{n}"))
        if any(isinstance(a, End) for a in actions):
            break
        retry = next(a for a in actions if isinstance(a, ScheduleRetry)).retry
        replay(
            core,
            [
                seq._ev("response.created", 90, response=seq._response(f"m{n}", "x")),
                seq._ev("response.done", 91, response=seq._response(f"m{n}", "completed")),
            ],
        )
        assert len(sent(core.retry_due(retry))) == 1
    ends = [a for a in actions if isinstance(a, End)]
    assert ends == [End("model_response_failed: rate_limit_exceeded", failed=True)]
    assert n == MAX_FAILURES - 3


def test_a_retry_is_dropped_when_the_caller_is_answered_meanwhile() -> None:
    core = new_core()
    replay(core, seq.FAILED_RESPONSE["events"])
    actions = replay(core, seq.failed_response(30, "resp_F2"))  # second failure: 1 s backoff
    retry = next(a for a in actions if isinstance(a, ScheduleRetry)).retry
    for resp_id in ("resp_filler", "resp_V"):  # the "one moment", then server VAD's answer
        replay(core, [seq._ev("response.created", 40, response=seq._response(resp_id, "x"))])
        replay(core, [seq._ev("response.done", 41, response=seq._response(resp_id, "completed"))])
    assert core.retry_due(retry) == []  # the caller spoke again and was answered


@pytest.mark.parametrize(
    "name", ["FUNCTION_CALL_WITHOUT_NAME", "FUNCTION_CALL_NAME_FROM_ITEM_ONLY"]
)
def test_a_function_call_without_a_name_in_arguments_done_is_run_by_its_items_name(
    name: str,
) -> None:
    actions = replay(new_core(), ALL_SEQUENCES[name]["events"])
    tools = [a for a in actions if isinstance(a, RunTools)]
    assert tools == [
        RunTools((ToolCall("call_Q1", "get_free_slots", '{"day": "2026-12-02"}', "item_F1"),))
    ]


def test_a_cancelled_responses_function_call_is_not_run_and_the_model_is_told() -> None:
    core = new_core()
    actions = replay(core, seq.CANCELLED_WITH_TOOL_CALL["events"])
    assert not [a for a in actions if isinstance(a, RunTools)]
    outputs = sent(actions)
    assert outputs[0]["item"] == {
        "type": "function_call_output",
        "call_id": "call_Q1",
        "output": INTERRUPTED_OUTPUT,
    }
    validate_client_event(outputs[0])


def _audio(n: int, resp_id: str, item_id: str) -> dict[str, Any]:
    return seq._ev(
        "response.output_audio.delta",
        n,
        response_id=resp_id,
        item_id=item_id,
        output_index=0,
        content_index=0,
        delta=seq.AUDIO_100_MS,
    )


def test_a_barge_in_truncates_to_what_was_heard_and_drops_the_rest() -> None:
    core = new_core()
    replay(core, [_audio(1, "resp_1", "item_A"), _audio(2, "resp_1", "item_A")])
    core.mark("item_A:100")
    text = "one two three four five six seven eight nine ten"
    replay(
        core,
        [
            seq._ev(
                "response.output_audio_transcript.done",
                3,
                response_id="resp_1",
                item_id="item_A",
                output_index=0,
                content_index=0,
                transcript=text,
            )
        ],
    )
    actions = replay(
        core, [seq._ev("input_audio_buffer.speech_started", 4, audio_start_ms=1, item_id="item_U")]
    )
    assert isinstance(actions[0], ClearCaller)
    truncate = sent(actions)[0]
    assert (truncate["item_id"], truncate["audio_end_ms"]) == ("item_A", 100)
    validate_client_event(truncate)
    assert core.transcript.turns()[0] == {
        "role": "assistant",
        "text": "one two three four five",
        "offset_ms": 1000,
        "interrupted": True,
    }
    late = decode_server_event(json.dumps(_audio(5, "resp_1", "item_A")))
    assert isinstance(late, AudioDelta)
    assert core.audio(late, 100) is None  # the interrupted response's last deltas


def test_a_mark_cannot_claim_more_than_was_sent() -> None:
    core = new_core()
    replay(core, [_audio(1, "resp_1", "item_A"), _audio(2, "resp_1", "item_A")])
    core.mark("item_A:999999")
    assert core.playback.played_ms == 200
    assert core.playback.drained


def test_nothing_is_truncated_when_the_caller_speaks_after_the_audio_played() -> None:
    core = new_core()
    replay(core, [_audio(1, "resp_1", "item_A")])
    core.mark("item_A:100")
    assert (
        replay(
            core,
            [seq._ev("input_audio_buffer.speech_started", 2, audio_start_ms=1, item_id="item_U")],
        )
        == []
    )


def _session(input_format: str, output_format: str, voice: str, expires_at: Any) -> dict[str, Any]:
    return {
        "type": "session.updated",
        "event_id": "event_S",
        "session": {
            "type": "realtime",
            "id": "sess_1",
            "expires_at": expires_at,
            "audio": {
                "input": {"format": {"type": input_format}},
                "output": {"format": {"type": output_format, "rate": 24000}, "voice": voice},
            },
        },
    }


def test_a_session_whose_audio_format_did_not_take_effect_ends_the_call() -> None:
    actions = replay(new_core(), [_session("audio/pcmu", "audio/pcm", "marin", UNIX_NOW_S + 3600)])
    assert End("model_session_mismatch", failed=True) in actions
    assert any(isinstance(a, Note) and a.alert and "audio/pcm" in a.message for a in actions)


def test_a_confirmed_session_sets_the_expiry_and_notes_another_voice() -> None:
    actions = replay(new_core(), [_session("audio/pcmu", "audio/pcmu", "alloy", UNIX_NOW_S + 1800)])
    assert Expiry(1800.0) in actions
    assert not [a for a in actions if isinstance(a, End)]
    assert any(isinstance(a, Note) and "alloy" in a.message for a in actions)


@pytest.mark.parametrize("expires_at", [UNIX_NOW_S - 5, UNIX_NOW_S + 10 * 86400, "soon", True])
def test_an_unbelievable_expiry_is_ignored(expires_at: Any) -> None:
    actions = replay(new_core(), [_session("audio/pcmu", "audio/pcmu", "marin", expires_at)])
    assert not [a for a in actions if isinstance(a, Expiry | End)]
    assert [a.title for a in actions if isinstance(a, Note)] == ["Model session expiry ignored"]


def _error(
    code: str | None, error_type: str = "invalid_request_error", event_id: str | None = None
) -> dict[str, Any]:
    return {
        "type": "error",
        "event_id": "event_E",
        "error": {
            "type": error_type,
            "code": code,
            "message": "m",
            "param": None,
            "event_id": event_id,
        },
    }


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            _error("insufficient_quota", "insufficient_quota"),
            End("model_error: insufficient_quota", True),
        ),
        (_error("invalid_api_key"), End("model_error: invalid_api_key", True)),
        (_error(None, "authentication_error"), End("model_error: authentication_error", True)),
        (_error("session_expired"), Replace("session_expired")),
    ],
)
def test_fatal_errors_end_the_call_and_an_expired_session_is_replaced(
    error: dict[str, Any], expected: Action
) -> None:
    actions = replay(new_core(), [error])
    assert expected in actions


@pytest.mark.parametrize(
    "error",
    [
        _error(None, "server_error"),
        _error("string_above_max_length"),
        _error("invalid_value", event_id="a17"),
    ],
)
def test_other_errors_leave_the_call_going(error: dict[str, Any]) -> None:
    actions = replay(new_core(), [error])
    assert [type(a) for a in actions] == [Note]
    assert actions[0].level == "warning"  # type: ignore[union-attr]


def test_an_error_names_the_client_event_that_caused_it() -> None:
    actions = replay(new_core(), [_error("invalid_value", event_id="a17")])
    assert "input_audio_buffer.append a17" in actions[0].message  # type: ignore[union-attr]


def test_recoverable_errors_alert_once_per_episode() -> None:
    core = new_core()
    alerts = []
    for at_s in (1.0, 2.0, 3.0, 4.0, 70.0, 200.0, 201.0, 202.0):
        notes = core.event(
            decode_server_event(json.dumps(_error(None, "server_error"))),
            at_s,
            UNIX_NOW_S,
        )
        alerts.append(notes[0].alert)  # type: ignore[union-attr]
    assert alerts == [False, False, True, False, False, False, False, True]


def test_every_client_event_the_core_sends_is_a_valid_ga_event_with_an_id() -> None:
    core = new_core()
    frames = [core.caller_audio("/////w=="), core.caller_text("The caller pressed 1.")]
    frames += [a.data for a in core.ask(Request("Greet.")) if isinstance(a, Send)]
    frames.append(core.tool_output(ToolCall("call_1", "x", "{}"), '{"ok": true}').data)
    ids = []
    for frame in frames:
        event = json.loads(frame)
        validate_client_event(event)
        ids.append(event["event_id"])
    assert len(set(ids)) == len(ids)


# -- what a second review found: states a call could not get out of -----------------------


def _created(n: int, resp_id: str) -> dict[str, Any]:
    return seq._ev("response.created", n, response=seq._response(resp_id, "in_progress"))


def _done(n: int, resp_id: str) -> dict[str, Any]:
    return seq._ev("response.done", n, response=seq._response(resp_id, "completed"))


def test_a_response_create_answered_by_an_error_is_retried_not_stuck() -> None:
    core = new_core()
    assert [e["event_id"] for e in sent(core.ask(Request("Greet.", purpose="greeting")))] == ["r1"]
    actions = replay(core, [_error("invalid_value", event_id="r1")])
    retry = next(a for a in actions if isinstance(a, ScheduleRetry)).retry
    assert not core.responses.idle  # a hang-up waits for the retry
    again = sent(core.retry_due(retry))
    assert [e["response"]["instructions"] for e in again] == ["Greet."]


def test_a_response_create_nothing_answers_is_retried_after_its_deadline() -> None:
    core = new_core()
    core.ask(Request("Greet.", purpose="greeting"), now_s=10.0)
    assert core.check(12.0) == []
    actions = core.check(15.5)
    assert any(isinstance(a, ScheduleRetry) for a in actions)
    assert any(isinstance(a, Note) and "no_response" in a.message for a in actions)


def test_the_deadline_of_an_unanswered_response_create_is_known_in_advance() -> None:
    # A renewal waiting for quiet sleeps until exactly then (actors/call/sessions.py).
    core = new_core()
    assert core.responses.overdue_at_s == math.inf  # nothing asked: no deadline
    core.ask(Request("Greet.", purpose="greeting"), now_s=10.0)
    due_s = core.responses.overdue_at_s
    assert core.check(due_s - 0.001) == []
    assert any(isinstance(a, ScheduleRetry) for a in core.check(due_s))
    assert core.responses.overdue_at_s == math.inf  # failed: nothing waits any more


def test_a_refusal_without_event_id_after_vads_response_requeues_ours() -> None:
    """The realistic order: the server announces VAD's response, then refuses ours."""
    core = new_core()
    core.ask(Request('Say: "We will call you back."', purpose="goodbye"))
    replay(core, [_created(1, "resp_vad"), _error(None)])  # code null ...
    refusal = {"type": "error", "event_id": "event_R", "error": {
        "type": "invalid_request_error", "code": "conversation_already_has_active_response",
        "message": "Conversation already has an active response in progress: resp_vad.",
        "param": None, "event_id": None}}  # fmt: skip
    replay(core, [refusal])
    again = sent(replay(core, [_done(2, "resp_vad")]))
    assert [e["response"]["instructions"] for e in again] == ['Say: "We will call you back."']


def test_a_refused_session_update_ends_the_call_rather_than_play_static() -> None:
    actions = replay(new_core(), [_error("invalid_value", event_id="s1")])
    ends = [a for a in actions if isinstance(a, End)]
    assert [(e.reason, e.failed) for e in ends] == [("model_session_refused", True)]


def test_a_pending_retry_keeps_the_call_from_hanging_up() -> None:
    core = new_core()
    core.ask(Request('Say: "Goodbye."', purpose="goodbye"))
    replay(core, seq.failed_response(1, "resp_G"))
    assert not core.responses.idle
    assert not core.quiet


def test_a_failed_filler_is_neither_retried_nor_counted() -> None:
    core = new_core()
    first = replay(core, seq.failed_response(1, "resp_1"))  # first failure: immediate retry
    core.retry_due(next(a for a in first if isinstance(a, ScheduleRetry)).retry)
    retry = next(
        a for a in replay(core, seq.failed_response(3, "resp_2")) if isinstance(a, ScheduleRetry)
    )
    failures = core.responses.failures
    # The filler the second failure sent fails too.
    actions = replay(core, seq.failed_response(5, "resp_filler"))
    assert not [a for a in actions if isinstance(a, ScheduleRetry | End)]
    assert core.responses.failures == failures
    assert len(sent(core.retry_due(retry.retry))) == 1


def test_requests_wait_while_the_session_is_replaced_and_the_history_goes_first() -> None:
    core = new_core()
    replay(core, seq.GA_TURN["events"])
    core.replacing()
    assert core.ask(Request("Are you still there?", purpose="prompt")) == []
    history = [json.loads(s.data) for s in core.restored()]
    assert [h["type"] for h in history] == ["conversation.item.create"] * 2
    resumed = sent(core.resumed())
    assert [e["response"]["instructions"] for e in resumed] == ["Are you still there?"]


def test_a_tool_result_after_a_replacement_reaches_the_model_as_a_note() -> None:
    core = new_core()
    actions = replay(core, seq.FUNCTION_CALL_WITHOUT_NAME["events"])
    (call,) = next(a for a in actions if isinstance(a, RunTools)).calls
    core.replacing()
    core.restored()
    core.resumed()
    note = json.loads(core.tool_output(call, '{"booked": true}').data)
    assert note["item"]["role"] == "system"
    assert "get_free_slots" in note["item"]["content"][0]["text"]
    validate_client_event(note)


def test_playback_accounting_survives_a_replacement() -> None:
    core = new_core()
    replay(core, [_audio(1, "resp_1", "item_A"), _audio(2, "resp_1", "item_A")])
    core.mark("item_A:100")
    core.replacing()
    core.restored()
    assert not core.playback.drained  # Twilio is still playing the rest
    core.mark("item_A:200")
    assert core.playback.drained


def test_a_full_queue_drops_a_prompt_never_a_goodbye() -> None:
    core = new_core()
    core.ask(Request("Greet.", purpose="greeting"))
    for n in range(4):
        core.ask(Request(f"Prompt {n}.", purpose="prompt"))
    core.ask(Request('Say: "Goodbye."', purpose="goodbye"))
    purposes = [r.purpose for r in core.responses.queue]
    assert "goodbye" in purposes
    assert len(purposes) == 4
