"""OpenAI Realtime (GA) wire format: pure functions, no I/O (protocols.md section 1).

Client events are built as msgspec structs that declare exactly the GA fields we send;
the tests validate each against the openai package's own types with no unknown keys.
Server events decode into small records declaring only the fields the call actor reads;
any other event type decodes as ``OtherServerEvent`` (the protocol adds events over
time, and most need no action).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import msgspec

if TYPE_CHECKING:
    from engine.projects import Project


class RealtimeProtocolError(ValueError):
    """A frame that is not a Realtime server event."""


# -- client events --------------------------------------------------------------------------


class _Append(msgspec.Struct, tag="input_audio_buffer.append", tag_field="type"):
    audio: str


class _ResponseCreate(msgspec.Struct, tag="response.create", tag_field="type", omit_defaults=True):
    response: dict[str, Any] | None = None


class _ResponseCancel(msgspec.Struct, tag="response.cancel", tag_field="type"):
    pass


class _Truncate(msgspec.Struct, tag="conversation.item.truncate", tag_field="type"):
    item_id: str
    content_index: int
    audio_end_ms: int


class _ItemCreate(msgspec.Struct, tag="conversation.item.create", tag_field="type"):
    item: dict[str, Any]


class _SessionUpdate(msgspec.Struct, tag="session.update", tag_field="type"):
    session: dict[str, Any]


_encoder: Final = msgspec.json.Encoder()
# The caller's speech is transcribed by this model, billed apart at its own prices
# (engine/pricing.py TRANSCRIPTION_PRICES).
TRANSCRIPTION_MODEL: Final = "gpt-4o-mini-transcribe"


def encode_append(audio_b64: str) -> bytes:
    """Caller audio, base64 mu-law exactly as Twilio sent it (the hot path)."""
    return _encoder.encode(_Append(audio_b64))


def encode_response_create(instructions: str | None = None) -> bytes:
    """Ask for a response; ``instructions`` override the session's for this one only."""
    response = None if instructions is None else {"instructions": instructions}
    return _encoder.encode(_ResponseCreate(response))


def encode_response_cancel() -> bytes:
    return _encoder.encode(_ResponseCancel())


def encode_truncate(item_id: str, audio_end_ms: int) -> bytes:
    """Forget the part of an assistant item the caller never heard (barge-in)."""
    return _encoder.encode(_Truncate(item_id, 0, max(0, audio_end_ms)))


def encode_function_output(call_id: str, output: str) -> bytes:
    item = {"type": "function_call_output", "call_id": call_id, "output": output}
    return _encoder.encode(_ItemCreate(item))


def encode_user_text(text: str) -> bytes:
    """A caller turn as text: DTMF ("caller pressed 1"), or history restored after a
    reconnect."""
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    return _encoder.encode(_ItemCreate(item))


def encode_assistant_text(text: str) -> bytes:
    """An assistant turn as text, for restoring the conversation after a reconnect."""
    content = [{"type": "output_text", "text": text}]
    return _encoder.encode(
        _ItemCreate({"type": "message", "role": "assistant", "content": content})
    )


class TurnDetection(msgspec.Struct, frozen=True, kw_only=True):
    """Server VAD settings (per project when the project says so)."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


def encode_session_update(
    project: Project,
    *,
    model: str,
    builtin_tools: list[dict[str, Any]],
    vad: TurnDetection,
    transcription_model: str = TRANSCRIPTION_MODEL,
) -> bytes:
    """The GA session for a call: mu-law both ways (audio passes through unconverted),
    server VAD that interrupts the model when the caller speaks, input transcription,
    the project's instructions, and its tools plus the engine's own."""
    tools = [
        {"type": "function", "name": t.name, "description": t.description,
         "parameters": t.parameters}
        for t in project.tools
    ] + builtin_tools  # fmt: skip
    session = {
        "type": "realtime",
        "model": model,
        "instructions": project.instructions,
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": {"type": "audio/pcmu"},
                "transcription": {"model": transcription_model, "language": project.language},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": vad.threshold,
                    "prefix_padding_ms": vad.prefix_padding_ms,
                    "silence_duration_ms": vad.silence_duration_ms,
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {"format": {"type": "audio/pcmu"}, "voice": project.voice},
        },
        "tools": tools,
        "tool_choice": "auto",
    }
    return _encoder.encode(_SessionUpdate(session))


# -- server events --------------------------------------------------------------------------


class AudioDelta(msgspec.Struct, frozen=True, tag="response.output_audio.delta", tag_field="type"):
    response_id: str
    item_id: str
    delta: str  # base64 mu-law, forwarded to Twilio as it is


class TranscriptDelta(
    msgspec.Struct, frozen=True, tag="response.output_audio_transcript.delta", tag_field="type"
):
    response_id: str
    item_id: str
    delta: str


class TranscriptDone(
    msgspec.Struct, frozen=True, tag="response.output_audio_transcript.done", tag_field="type"
):
    item_id: str
    transcript: str


class CallerTranscript(
    msgspec.Struct,
    frozen=True,
    tag="conversation.item.input_audio_transcription.completed",
    tag_field="type",
):
    item_id: str
    transcript: str
    usage: dict[str, Any] | None = None


class SpeechStarted(
    msgspec.Struct, frozen=True, tag="input_audio_buffer.speech_started", tag_field="type"
):
    item_id: str
    audio_start_ms: int


class SpeechStopped(
    msgspec.Struct, frozen=True, tag="input_audio_buffer.speech_stopped", tag_field="type"
):
    item_id: str
    audio_end_ms: int


class FunctionCallDone(
    msgspec.Struct, frozen=True, tag="response.function_call_arguments.done", tag_field="type"
):
    response_id: str
    item_id: str
    call_id: str
    name: str
    arguments: str  # a JSON string


class ResponseInfo(msgspec.Struct, frozen=True):
    id: str
    status: str
    status_details: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None


class ResponseCreated(msgspec.Struct, frozen=True, tag="response.created", tag_field="type"):
    response: ResponseInfo


class ResponseDone(msgspec.Struct, frozen=True, tag="response.done", tag_field="type"):
    response: ResponseInfo


class ErrorInfo(msgspec.Struct, frozen=True):
    type: str
    message: str
    code: str | None = None
    event_id: str | None = None


class ServerError(msgspec.Struct, frozen=True, tag="error", tag_field="type"):
    error: ErrorInfo

    @property
    def benign(self) -> bool:
        """Races the protocol makes normal, not faults: cancelling a response that just
        finished, truncating audio that already ended."""
        return (self.error.code or "") in BENIGN_ERROR_CODES

    @property
    def fatal(self) -> bool:
        """Errors after which this session can do nothing for the caller: the account
        or key is refused. Everything else (``code: null`` included: the live API sends
        it for a refused truncate, or a ``server_error``) leaves the session open."""
        return (self.error.code or "") in FATAL_ERROR_CODES or self.error.type in FATAL_ERROR_TYPES


class SessionCreated(msgspec.Struct, frozen=True, tag="session.created", tag_field="type"):
    session: dict[str, Any]


class SessionUpdated(msgspec.Struct, frozen=True, tag="session.updated", tag_field="type"):
    session: dict[str, Any]


class OtherServerEvent(msgspec.Struct, frozen=True):
    type: str


BENIGN_ERROR_CODES: Final = frozenset(
    {
        "response_cancel_not_active",
        "conversation_already_has_active_response",
        "item_truncate_invalid_item_id",
        "invalid_audio_end_ms",
    }
)

# Reported from the live API by users of other bridges (LiveKit Agents #6352: an account
# out of quota, a revoked key): retrying or going on cannot help.
FATAL_ERROR_CODES: Final = frozenset({"invalid_api_key", "insufficient_quota"})
FATAL_ERROR_TYPES: Final = frozenset({"authentication_error", "insufficient_quota"})

ServerEvent = (
    AudioDelta
    | TranscriptDelta
    | TranscriptDone
    | CallerTranscript
    | SpeechStarted
    | SpeechStopped
    | FunctionCallDone
    | ResponseCreated
    | ResponseDone
    | ServerError
    | SessionCreated
    | SessionUpdated
)

_decoder: Final[msgspec.json.Decoder[ServerEvent]] = msgspec.json.Decoder(ServerEvent)
_type_only: Final = msgspec.json.Decoder(OtherServerEvent)
_KNOWN_TYPES: Final = frozenset(
    msgspec.inspect.type_info(member).tag  # type: ignore[attr-defined]
    for member in ServerEvent.__args__
)


def decode_server_event(frame: str | bytes) -> ServerEvent | OtherServerEvent:
    try:
        return _decoder.decode(frame)
    except msgspec.ValidationError as exc:
        try:
            other = _type_only.decode(frame)
        except msgspec.DecodeError:
            raise RealtimeProtocolError(f"not a Realtime event: {exc}") from None
        if other.type in _KNOWN_TYPES:  # a known event with a missing or mistyped field
            raise RealtimeProtocolError(f"invalid {other.type}: {exc}") from None
        return other
    except msgspec.DecodeError as exc:
        raise RealtimeProtocolError(f"not JSON: {exc}") from None
