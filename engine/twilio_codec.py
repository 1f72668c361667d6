"""Twilio Media Streams wire format: pure functions, no I/O (docs/wire-formats.md 2.2, 2.3).

Inbound frames decode into small typed records; the media payload stays the base64 text
Twilio sent, because it goes to the model unchanged (``audio/pcmu`` both ways: no
transcoding, no base64 round trip on the hot path). Fields we do not read are not
declared, so msgspec skips them and new fields Twilio adds do no harm.
"""

from __future__ import annotations

import binascii
from typing import Final

import msgspec


class TwilioProtocolError(ValueError):
    """A frame that is not a Media Streams message (malformed JSON, a missing field)."""


class MediaFormat(msgspec.Struct, frozen=True):
    encoding: str = "audio/x-mulaw"
    sampleRate: int = 8000
    channels: int = 1


class StartInfo(msgspec.Struct, frozen=True):
    streamSid: str
    callSid: str
    accountSid: str = ""
    tracks: list[str] = msgspec.field(default_factory=list)
    customParameters: dict[str, str] = msgspec.field(default_factory=dict)
    mediaFormat: MediaFormat = msgspec.field(default_factory=MediaFormat)


class Connected(msgspec.Struct, frozen=True, tag="connected", tag_field="event"):
    protocol: str = ""
    version: str = ""


class Start(msgspec.Struct, frozen=True, tag="start", tag_field="event"):
    streamSid: str
    start: StartInfo


class MediaChunk(msgspec.Struct, frozen=True):
    payload: str
    timestamp: str = "0"
    track: str = "inbound"


class Media(msgspec.Struct, frozen=True, tag="media", tag_field="event"):
    streamSid: str
    media: MediaChunk


class MarkName(msgspec.Struct, frozen=True):
    name: str


class Mark(msgspec.Struct, frozen=True, tag="mark", tag_field="event"):
    streamSid: str
    mark: MarkName


class DtmfDigit(msgspec.Struct, frozen=True):
    digit: str
    track: str = "inbound_track"


class Dtmf(msgspec.Struct, frozen=True, tag="dtmf", tag_field="event"):
    streamSid: str
    dtmf: DtmfDigit


class Stop(msgspec.Struct, frozen=True, tag="stop", tag_field="event"):
    streamSid: str


class UnknownEvent(msgspec.Struct, frozen=True):
    """An event name this engine does not know (Twilio may add some): logged, ignored."""

    event: str


TwilioEvent = Connected | Start | Media | Mark | Dtmf | Stop

_decoder: Final[msgspec.json.Decoder[TwilioEvent]] = msgspec.json.Decoder(TwilioEvent)
_event_name: Final = msgspec.json.Decoder(dict[str, object])
_KNOWN: Final = frozenset({"connected", "start", "media", "mark", "dtmf", "stop"})


def decode_twilio(frame: str | bytes) -> TwilioEvent | UnknownEvent:
    """One inbound frame. ``TwilioProtocolError`` for anything that is not a message."""
    try:
        return _decoder.decode(frame)
    except msgspec.ValidationError as exc:
        name = _unknown_event_name(frame)
        if name is not None:
            return UnknownEvent(name)
        raise TwilioProtocolError(f"invalid Media Streams message: {exc}") from None
    except msgspec.DecodeError as exc:
        raise TwilioProtocolError(f"not JSON: {exc}") from None


def _unknown_event_name(frame: str | bytes) -> str | None:
    try:
        event = _event_name.decode(frame).get("event")
    except msgspec.DecodeError:
        return None
    return event if isinstance(event, str) and event not in _KNOWN else None


def join_payloads(payloads: list[str]) -> str | None:
    """Several frames' base64 payloads as one (base64 cannot simply be concatenated:
    each 160-byte frame ends in padding); None if one is not base64. C all the way."""
    try:
        audio = b"".join(binascii.a2b_base64(payload, strict_mode=True) for payload in payloads)
    except binascii.Error:
        return None
    return binascii.b2a_base64(audio, newline=False).decode()


# -- outbound -------------------------------------------------------------------------------


class _OutMediaChunk(msgspec.Struct):
    payload: str


class _OutMedia(msgspec.Struct, tag="media", tag_field="event"):
    streamSid: str
    media: _OutMediaChunk


class _OutMark(msgspec.Struct, tag="mark", tag_field="event"):
    streamSid: str
    mark: MarkName


class _OutClear(msgspec.Struct, tag="clear", tag_field="event"):
    streamSid: str


_encoder: Final = msgspec.json.Encoder()


def encode_media(stream_sid: str, payload_b64: str) -> bytes:
    """Audio for the caller: base64 mu-law 8 kHz, any length (Twilio queues it)."""
    return _encoder.encode(_OutMedia(stream_sid, _OutMediaChunk(payload_b64)))


def encode_mark(stream_sid: str, name: str) -> bytes:
    """Twilio echoes the mark once everything queued before it has played."""
    return _encoder.encode(_OutMark(stream_sid, MarkName(name)))


def encode_clear(stream_sid: str) -> bytes:
    """Drop every queued outbound audio at once (barge-in)."""
    return _encoder.encode(_OutClear(stream_sid))
