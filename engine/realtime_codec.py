"""OpenAI Realtime (GA) wire format: pure functions, no I/O (docs/wire-formats.md 1).

Client events are built as msgspec structs that declare exactly the GA fields we send;
the tests validate each against the openai package's own types with no unknown keys.
Server events decode into small records declaring only the fields the call actor reads;
any other event type decodes as ``OtherServerEvent`` (the protocol adds events over
time, and most need no action).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec

if TYPE_CHECKING:
    from collections.abc import Sequence


class RealtimeProtocolError(ValueError):
    """A frame that is not a Realtime server event."""


# -- client events --------------------------------------------------------------------------


class _Client(msgspec.Struct, tag_field="type", omit_defaults=True):
    # Optional on every client event; the server echoes it in ``error.event_id`` when
    # that event caused an error (docs/wire-formats.md 1.2), so an error names its cause.
    event_id: str | None = None


class _Append(_Client, tag="input_audio_buffer.append", kw_only=True):
    audio: str


class _ResponseCreate(_Client, tag="response.create"):
    response: dict[str, Any] | None = None


class _Truncate(_Client, tag="conversation.item.truncate", kw_only=True):
    item_id: str
    content_index: int
    audio_end_ms: int


class _ItemCreate(_Client, tag="conversation.item.create", kw_only=True):
    item: dict[str, Any]


class _SessionUpdate(_Client, tag="session.update", kw_only=True):
    session: dict[str, Any]


_encoder: Final = msgspec.json.Encoder()
# The caller's speech is transcribed by this model, billed apart at its own prices
# (engine/pricing.py TRANSCRIPTION_PRICES).
TRANSCRIPTION_MODEL: Final = "gpt-4o-mini-transcribe"


def encode_append(audio_b64: str, event_id: str | None = None) -> bytes:
    """Caller audio, base64 mu-law exactly as Twilio sent it (the hot path)."""
    return _encoder.encode(_Append(event_id=event_id, audio=audio_b64))


def encode_response_create(
    instructions: str | None = None, event_id: str | None = None, *, out_of_band: bool = False
) -> bytes:
    """Ask for a response; ``instructions`` override the session's for this one only.
    ``out_of_band``: a response outside the conversation (``conversation: "none"``), for
    a filler ("one moment") that must not become part of what the model remembers."""
    response: dict[str, Any] | None = None
    if instructions is not None:
        response = {"instructions": instructions}
    if out_of_band:
        response = {**(response or {}), "conversation": "none"}
    return _encoder.encode(_ResponseCreate(event_id=event_id, response=response))


def encode_truncate(item_id: str, audio_end_ms: int, event_id: str | None = None) -> bytes:
    """Forget the part of an assistant item the caller never heard (barge-in)."""
    return _encoder.encode(
        _Truncate(
            event_id=event_id, item_id=item_id, content_index=0, audio_end_ms=max(0, audio_end_ms)
        )
    )


def encode_function_output(call_id: str, output: str, event_id: str | None = None) -> bytes:
    item = {"type": "function_call_output", "call_id": call_id, "output": output}
    return _encoder.encode(_ItemCreate(event_id=event_id, item=item))


def encode_user_text(text: str, event_id: str | None = None) -> bytes:
    """A caller turn as text: DTMF ("caller pressed 1"), or history restored after a
    reconnect."""
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    return _encoder.encode(_ItemCreate(event_id=event_id, item=item))


def encode_system_text(text: str, event_id: str | None = None) -> bytes:
    """A note from the engine to the model (a function's result whose call the current
    session never saw, after a reconnect)."""
    item = {"type": "message", "role": "system", "content": [{"type": "input_text", "text": text}]}
    return _encoder.encode(_ItemCreate(event_id=event_id, item=item))


def encode_assistant_text(text: str, event_id: str | None = None) -> bytes:
    """An assistant turn as text, for restoring the conversation after a reconnect."""
    content = [{"type": "output_text", "text": text}]
    return _encoder.encode(
        _ItemCreate(
            event_id=event_id,
            item={"type": "message", "role": "assistant", "content": content},
        )
    )


class TurnDetection(msgspec.Struct, frozen=True, kw_only=True):
    """Server VAD settings (per project when the project says so)."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


class ToolSpec(Protocol):
    """A function the model may call (a project's tool: engine/project_tools.py ``Tool``)."""

    @property
    def name(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def parameters(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Persona:
    """The project's side of a session: what the model is told, in which language it
    hears the caller, its voice and the project's tools. The codec takes these, not a
    whole project: it depends on nothing above it (an import contract says so)."""

    instructions: str
    language: str
    voice: str
    tools: Sequence[ToolSpec] = ()


def encode_session_update(
    persona: Persona,
    *,
    model: str,
    builtin_tools: list[dict[str, Any]],
    vad: TurnDetection,
    transcription_model: str = TRANSCRIPTION_MODEL,
    event_id: str | None = None,
) -> bytes:
    """The GA session for a call: mu-law both ways (audio passes through unconverted),
    server VAD that interrupts the model when the caller speaks, input transcription,
    the project's instructions, and its tools plus the engine's own."""
    tools = [
        {"type": "function", "name": t.name, "description": t.description,
         "parameters": t.parameters}
        for t in persona.tools
    ] + builtin_tools  # fmt: skip
    session = {
        "type": "realtime",
        "model": model,
        "instructions": persona.instructions,
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": {"type": "audio/pcmu"},
                "transcription": {"model": transcription_model, "language": persona.language},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": vad.threshold,
                    "prefix_padding_ms": vad.prefix_padding_ms,
                    "silence_duration_ms": vad.silence_duration_ms,
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {"format": {"type": "audio/pcmu"}, "voice": persona.voice},
        },
        "tools": tools,
        "tool_choice": "auto",
    }
    return _encoder.encode(_SessionUpdate(event_id=event_id, session=session))


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
    arguments: str  # a JSON string
    # Required in the GA types, yet absent from the reference's own example: when it is
    # missing, the name comes from the item (conversation.item.added, output_item.done).
    name: str = ""


class ItemInfo(msgspec.Struct, frozen=True):
    """The parts of a conversation item the call reads (message or function call)."""

    id: str
    type: str
    role: str | None = None
    name: str | None = None
    call_id: str | None = None
    arguments: str | None = None
    status: str | None = None


class InputCommitted(
    msgspec.Struct, frozen=True, tag="input_audio_buffer.committed", tag_field="type"
):
    """The caller's turn became a conversation item: its place in the conversation."""

    item_id: str
    previous_item_id: str | None = None


class ItemAdded(msgspec.Struct, frozen=True, tag="conversation.item.added", tag_field="type"):
    item: ItemInfo
    previous_item_id: str | None = None


class OutputItemDone(
    msgspec.Struct, frozen=True, tag="response.output_item.done", tag_field="type"
):
    response_id: str
    item: ItemInfo


class TranscriptionFailed(
    msgspec.Struct,
    frozen=True,
    tag="conversation.item.input_audio_transcription.failed",
    tag_field="type",
):
    item_id: str
    error: dict[str, Any] | None = None


class ResponseInfo(msgspec.Struct, frozen=True):
    id: str
    status: str
    status_details: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    output: list[ItemInfo] | None = None

    @property
    def failure(self) -> tuple[str, str]:
        """A failed response's (code, message), from ``status_details.error``."""
        error = (self.status_details or {}).get("error") or {}
        if not isinstance(error, dict):
            return "unknown", ""
        code = error.get("code") or error.get("type") or "unknown"
        return str(code), str(error.get("message") or "")


class ResponseCreated(msgspec.Struct, frozen=True, tag="response.created", tag_field="type"):
    response: ResponseInfo


class ResponseDone(msgspec.Struct, frozen=True, tag="response.done", tag_field="type"):
    response: ResponseInfo


class ErrorInfo(msgspec.Struct, frozen=True):
    type: str
    message: str
    code: str | None = None
    param: str | None = None
    event_id: str | None = None  # the client event that caused it, if it carried one


class ServerError(msgspec.Struct, frozen=True, tag="error", tag_field="type"):
    error: ErrorInfo


class SessionCreated(msgspec.Struct, frozen=True, tag="session.created", tag_field="type"):
    session: dict[str, Any]


class SessionUpdated(msgspec.Struct, frozen=True, tag="session.updated", tag_field="type"):
    session: dict[str, Any]


class OtherServerEvent(msgspec.Struct, frozen=True):
    type: str


ServerEvent = (
    AudioDelta
    | TranscriptDelta
    | TranscriptDone
    | CallerTranscript
    | SpeechStarted
    | SpeechStopped
    | FunctionCallDone
    | InputCommitted
    | ItemAdded
    | OutputItemDone
    | TranscriptionFailed
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
