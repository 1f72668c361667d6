"""The conversation core of a call: what each model event means and what must follow.
Pure: no sockets, no clock, no tasks. The actor (actors/call/actor.py) feeds it decoded
events with the current time and carries out the actions it returns, so the core can be
tested by replaying event sequences (tests/test_call_core.py, fixtures named with their
source) without a socket or a timer.

It owns the transcript (conversation order), playback accounting (marks, barge-in
truncation), the response queue and retries, tool-call resolution, error classification
and the session checks; the actor owns the I/O, the limits timer and the business
functions' HTTP calls.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from actors.call.errors import (
    ClientIds,
    ErrorClass,
    ErrorRate,
    classify,
    is_active_response_refusal,
)
from actors.call.playback import Playback
from actors.call.responses import Outcome, Request, Responses, Retry
from actors.call.session_check import believed_expiry_s, format_mismatches, voice_mismatch
from actors.call.transcript import Transcript
from engine.pricing import add_transcription_usage, add_usage
from engine.realtime_codec import (
    CallerTranscript,
    FunctionCallDone,
    InputCommitted,
    ItemAdded,
    OutputItemDone,
    ResponseCreated,
    ResponseDone,
    ServerError,
    SessionCreated,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    TranscriptDelta,
    TranscriptDone,
    TranscriptionFailed,
    encode_append,
    encode_assistant_text,
    encode_function_output,
    encode_response_create,
    encode_system_text,
    encode_truncate,
    encode_user_text,
)

if TYPE_CHECKING:
    from actors.call.tools import ToolCall
    from engine.realtime_codec import AudioDelta, OtherServerEvent, ServerEvent

INTERRUPTED_OUTPUT = '{"error": "not run: the caller interrupted before it could run"}'


@dataclass(frozen=True, slots=True)
class Send:
    """A client event for the model."""

    data: bytes


@dataclass(frozen=True, slots=True)
class ClearCaller:
    """Drop the audio Twilio has buffered for the caller (a barge-in)."""


@dataclass(frozen=True, slots=True)
class RunTools:
    calls: tuple[ToolCall, ...]


@dataclass(frozen=True, slots=True)
class ScheduleRetry:
    retry: Retry


@dataclass(frozen=True, slots=True)
class End:
    reason: str
    failed: bool = False
    error: str | None = None  # the record's detail (default: the reason, when failed)


@dataclass(frozen=True, slots=True)
class Replace:
    """The session is gone (expired): a new one, with the conversation restored."""

    why: str


@dataclass(frozen=True, slots=True)
class Note:
    """Something to log, and to alert on when ``alert`` (an ``openaiError``)."""

    level: Literal["info", "warning", "error"]
    title: str
    message: str
    alert: bool = False


@dataclass(frozen=True, slots=True)
class Expiry:
    """The server's session ends in ``remaining_s``."""

    remaining_s: float


Action = Send | ClearCaller | RunTools | ScheduleRetry | End | Replace | Note | Expiry


class CallCore:
    def __init__(self, *, voice: str, started_at_s: float) -> None:
        self._voice = voice
        self._started_at_s = started_at_s
        self.transcript = Transcript()
        self.playback = Playback()
        self.responses = Responses()
        self.ids = ClientIds()
        self.error_rate = ErrorRate()
        self.usage: dict[str, Any] = {}
        self.caller_speaking = False
        self.errors_by_class: dict[str, int] = {}
        self.epoch = 0  # the model session's number: 0, then one more per replacement
        self.now_s = started_at_s  # the latest time the actor gave (for request deadlines)

    # -- the caller's side ------------------------------------------------------------------

    def caller_audio(self, payload_b64: str) -> bytes:
        return encode_append(payload_b64, self.ids.append())

    def caller_text(self, text: str) -> bytes:
        return encode_user_text(text, self.ids.new("i"))

    def mark(self, name: str) -> None:
        self.playback.mark(name)

    # -- what the call asks of the model ------------------------------------------------------

    def ask(self, request: Request, now_s: float | None = None) -> list[Action]:
        """A response the call wants (a greeting, a prompt, a goodbye, an answer)."""
        self._at(now_s)
        return self._maybe_send(self.responses.request(request))

    def retry_due(self, retry: Retry, now_s: float | None = None) -> list[Action]:
        self._at(now_s)
        return self._maybe_send(self.responses.retry_due(retry))

    def check(self, now_s: float) -> list[Action]:
        """Called every second or so: a ``response.create`` nothing answered is retried."""
        self._at(now_s)
        outcome = self.responses.overdue(now_s)
        return [] if outcome is None else self._outcome(outcome)

    def tool_output(self, call: ToolCall, output: str) -> Send:
        if call.epoch != self.epoch:
            # The session that asked is gone and this one never saw the call: the result
            # as a note, so the model knows what was done (a booking is not made twice).
            note = f"Result of {call.name}, asked for before a reconnection: {output}"
            return Send(encode_system_text(note, self.ids.new("i")))
        return Send(encode_function_output(call.call_id, output, self.ids.new("o")))

    def tools_done(self, *, answer: bool = True, now_s: float | None = None) -> list[Action]:
        """One response's tool outputs are sent; the model answers with them unless the
        call is about to end (``answer=False``)."""
        self._at(now_s)
        return self._maybe_send(self.responses.tools_done(answer=answer))

    def replacing(self) -> None:
        """A new session is being opened: nothing is asked of the model meanwhile (it
        would go to a socket about to be dropped); requests wait in the queue."""
        self.responses.held = True

    def restored(self) -> list[Send]:
        """The new session is up: the conversation so far, to send to it first. Playback
        accounting carries on (Twilio is still playing what it has)."""
        self.epoch += 1
        self.caller_speaking = False
        self.responses.lost()
        sends: list[Send] = []
        for turn in self.transcript.turns():
            encode = encode_user_text if turn["role"] == "caller" else encode_assistant_text
            sends.append(Send(encode(str(turn["text"]), self.ids.new("i"))))
        return sends

    def resumed(self, now_s: float | None = None) -> list[Action]:
        """The new session is the call's: what waited is asked of it."""
        self._at(now_s)
        self.responses.held = False
        return self._maybe_send(self.responses.next_queued())

    @property
    def quiet(self) -> bool:
        return (
            self.responses.idle
            and not self.caller_speaking
            and not self.responses.tools_running
            and self.playback.drained
        )

    def offset_ms(self, now_s: float) -> int:
        return int((now_s - self._started_at_s) * 1000)

    # -- what the model sends -----------------------------------------------------------------

    def audio(self, delta: AudioDelta, delta_ms: int) -> str | None:
        """The hot path: the mark to send after forwarding ``delta``, None to drop it."""
        return self.playback.audio(delta.response_id, delta.item_id, delta_ms)

    def event(
        self, event: ServerEvent | OtherServerEvent, now_s: float, now_unix_s: float
    ) -> list[Action]:
        self.now_s = now_s
        offset_ms = self.offset_ms(now_s)
        if isinstance(event, SpeechStarted):
            self.caller_speaking = True
            return self._barge_in()
        if isinstance(event, SpeechStopped):
            self.caller_speaking = False
        elif isinstance(event, InputCommitted):
            self.transcript.place(event.item_id, "caller", offset_ms, event.previous_item_id)
        elif isinstance(event, ItemAdded):
            self._item_added(event, offset_ms)
        elif isinstance(event, OutputItemDone):
            self.responses.item(event.item)
        elif isinstance(event, TranscriptDelta):
            self.transcript.assistant_streamed(event.item_id, event.delta, offset_ms)
        elif isinstance(event, TranscriptDone):
            self.transcript.assistant_said(event.item_id, event.transcript, offset_ms)
        elif isinstance(event, CallerTranscript):
            self.transcript.caller_said(event.item_id, event.transcript, offset_ms)
            add_transcription_usage(self.usage, event.usage)  # billed apart, at its price
        elif isinstance(event, TranscriptionFailed):
            message = str((event.error or {}).get("message") or "no reason given")
            return [Note("info", "Caller transcription failed", message)]
        elif isinstance(event, FunctionCallDone):
            self.responses.function_call(event)
        elif isinstance(event, ResponseCreated):
            self.responses.created(event.response.id)
        elif isinstance(event, ResponseDone):
            return self._response_done(event)
        elif isinstance(event, SessionCreated):
            return self._expiry(event.session, now_unix_s)
        elif isinstance(event, SessionUpdated):
            return self._session_updated(event.session, now_unix_s)
        elif isinstance(event, ServerError):
            return self._error(event, now_s)
        return []

    def _item_added(self, event: ItemAdded, offset_ms: int) -> None:
        item = event.item
        self.responses.item(item)
        if item.type == "message" and item.role in ("user", "assistant"):
            role: Literal["caller", "assistant"] = "caller" if item.role == "user" else "assistant"
            self.transcript.place(item.id, role, offset_ms, event.previous_item_id)

    def _barge_in(self) -> list[Action]:
        cut = self.playback.barge_in()
        if cut is None:
            return []
        self.transcript.heard(cut.item_id, cut.audio_end_ms, cut.generated_ms)
        truncate = encode_truncate(cut.item_id, cut.audio_end_ms, self.ids.new("t"))
        return [ClearCaller(), Send(truncate)]

    def _response_done(self, done: ResponseDone) -> list[Action]:
        info = done.response
        add_usage(self.usage, info.usage or {})
        if info.status == "cancelled":
            self.playback.cancelled(info.id)
        return self._outcome(self.responses.done(info))

    def _outcome(self, outcome: Outcome) -> list[Action]:
        actions: list[Action] = []
        for call in outcome.interrupted_calls:
            # The call stays in the conversation; its output says it never ran, so the
            # model does not believe a booking was made.
            actions.append(self.tool_output(call, INTERRUPTED_OUTPUT))
        if outcome.tools:
            actions.append(RunTools(tuple(replace(c, epoch=self.epoch) for c in outcome.tools)))
        if outcome.failed is not None:
            self._count("failed_response")
            code, message = outcome.failed
            actions.append(Note("warning", "Model response failed", f"{code}: {message}", True))
        if outcome.give_up is not None:
            actions.append(End(outcome.give_up, failed=True))
            return actions
        if outcome.retry is not None:
            actions.append(ScheduleRetry(outcome.retry))
        if outcome.send is not None:
            actions.append(self._send(outcome.send))
        return actions

    def _error(self, event: ServerError, now_s: float) -> list[Action]:
        error = event.error
        caused_by = ClientIds.kind_of(error.event_id)
        kind = classify(error.code, error.type, caused_by, error.message)
        self._count(kind.value)
        code = error.code or error.type
        cause = f" (after our {caused_by} {error.event_id})" if caused_by else ""
        message = f"{code}: {error.message}{cause}"
        if kind is ErrorClass.FATAL:
            return [Note("error", "Model error", message, True), End(f"model_error: {code}", True)]
        if kind is ErrorClass.SESSION_GONE:
            return [Note("warning", "Model session expired", message, True), Replace(code)]
        if caused_by == "session.update":
            # The session keeps the server's defaults (24 kHz PCM: static on a phone line)
            # or lacks the project's tools: it cannot serve this call.
            return [
                Note("error", "Model session refused", message, True),
                End(
                    "model_session_refused", failed=True, error=f"model_session_refused: {message}"
                ),
            ]
        if kind is ErrorClass.RACE:
            if is_active_response_refusal(error.code, error.message):
                self.responses.refused()  # only we send response.create: it is ours
            return [Note("info", "Model race", message)]
        if caused_by == "response.create":  # no response will come of it
            return [
                Note("warning", "Model error", message),
                *self._outcome(self.responses.create_failed(code, error.message)),
            ]
        alert = self.error_rate.note(now_s)
        return [Note("warning", "Model error", f"{message}; the call goes on", alert)]

    def _session_updated(self, session: dict[str, Any], now_unix_s: float) -> list[Action]:
        problems = format_mismatches(session)
        if problems:
            text = "; ".join(problems)
            return [
                Note("error", "Model session mismatch", text, True),
                End("model_session_mismatch", failed=True),
            ]
        actions = self._expiry(session, now_unix_s)
        voice = voice_mismatch(session, self._voice)
        if voice is not None:
            actions.append(Note("warning", "Model voice differs", voice, True))
        return actions

    def _expiry(self, session: dict[str, Any], now_unix_s: float) -> list[Action]:
        expires_at = session.get("expires_at")
        if expires_at is None:
            return []
        remaining_s = believed_expiry_s(expires_at, now_unix_s)
        if remaining_s is None:
            return [Note("warning", "Model session expiry ignored", f"expires_at={expires_at!r}")]
        return [Expiry(remaining_s)]

    def _count(self, error_class: str) -> None:
        self.errors_by_class[error_class] = self.errors_by_class.get(error_class, 0) + 1

    def _at(self, now_s: float | None) -> None:
        if now_s is not None:
            self.now_s = now_s

    def _maybe_send(self, request: Request | None) -> list[Action]:
        return [] if request is None else [self._send(request)]

    def _send(self, request: Request) -> Send:
        self.responses.sending(request, self.now_s)
        data = encode_response_create(
            request.instructions, self.ids.new("r"), out_of_band=request.out_of_band
        )
        return Send(data)
