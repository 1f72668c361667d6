"""Twilio's side of a Media Stream, as frames: what Twilio sends (docs/wire-formats.md 2.2),
built in one place for every peer that plays Twilio (the simulated caller, the tests, the
benchmarks, the locust users). Pure: no I/O, no clock, no Trio, so a gevent or asyncio
process imports it as well as a Trio one.

The engine's own codec (``engine/twilio_codec.py``) is the other side: it decodes these
and encodes what the engine sends back. Kept apart on purpose: a peer built from the
engine's own encoder would agree with the engine even where both were wrong, and
tests/test_twilio_frames.py holds these frames to the docs' samples instead.
"""

from __future__ import annotations

import binascii
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import msgspec

from engine.simulator.mulaw import FRAME_BYTES

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

FRAME_MS: Final = 20  # one 160-byte mu-law frame
ACCOUNT_SID: Final = "AC" + "0" * 32  # the account a peer without one names
_json: Final = msgspec.json.Encoder()
_STREAM: Final = re.compile(r'<Stream url="([^"]+)"')
_PARAMETER: Final = re.compile(r'<Parameter name="(\w+)" value="([^"]*)" />')


def new_call_sid() -> str:
    return "CA" + secrets.token_hex(16)


def new_stream_sid() -> str:
    return "MZ" + secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class TwimlStream:
    """What a ``<Connect><Stream>`` TwiML tells Twilio: where to stream, and the
    ``<Parameter>``s it then passes on in ``start.customParameters``."""

    url: str
    parameters: dict[str, str]


def stream_of(twiml: str) -> TwimlStream | None:
    """The stream a TwiML answer opens, or None (it said something else: turned away)."""
    url = _STREAM.search(twiml)
    if url is None:
        return None
    return TwimlStream(url[1], dict(_PARAMETER.findall(twiml)))


class TwilioFrames:
    """One stream's frames, in Twilio's numbering: ``sequenceNumber`` counts every frame
    after ``connected`` from 1, ``media.chunk`` counts the media frames from 1 and
    ``media.timestamp`` is the milliseconds of audio sent before each (all strings).

    ``media`` is the hot path of the benchmarks (one per caller every 20 ms): its
    constant head is encoded once, so a frame is one concatenation, no JSON encoder."""

    def __init__(self, stream_sid: str, call_sid: str, account_sid: str = ACCOUNT_SID) -> None:
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.sequence = 0  # of the last frame built
        self.chunks = 0  # media frames built
        self._media_head = b'{"event":"media","sequenceNumber":"'
        self._media_sid = b'","streamSid":' + _json.encode(stream_sid)

    def _next(self) -> str:
        self.sequence += 1
        return str(self.sequence)

    def connected(self) -> bytes:
        return b'{"event":"connected","protocol":"Call","version":"1.0.0"}'

    def start(
        self, parameters: Mapping[str, str] | None = None, *, tracks: tuple[str, ...] = ("inbound",)
    ) -> bytes:
        return _json.encode(
            {
                "event": "start",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": list(tracks),
                    "customParameters": dict(parameters or {}),
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        )

    def media(self, payload_b64: bytes) -> bytes:
        """The next media frame, its payload base64 already (ASCII, so no escaping)."""
        self.sequence += 1
        timestamp_ms = self.chunks * FRAME_MS
        self.chunks += 1
        return b"".join(
            (
                self._media_head,
                str(self.sequence).encode(),
                self._media_sid,
                b',"media":{"track":"inbound","chunk":"',
                str(self.chunks).encode(),
                b'","timestamp":"',
                str(timestamp_ms).encode(),
                b'","payload":"',
                payload_b64,
                b'"}}',
            )
        )

    def media_of(self, audio: bytes) -> Iterator[bytes]:
        """``audio`` (mu-law) as Twilio sends it: one frame per 160 bytes (20 ms)."""
        for start in range(0, len(audio), FRAME_BYTES):
            chunk = audio[start : start + FRAME_BYTES]
            yield self.media(binascii.b2a_base64(chunk, newline=False))

    def mark(self, name: str) -> bytes:
        """A mark the engine sent, returned: its audio has played."""
        return _json.encode(
            {
                "event": "mark",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        )

    def dtmf(self, digit: str) -> bytes:
        return _json.encode(
            {
                "event": "dtmf",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    def stop(self) -> bytes:
        """The stream ended: the caller hung up, or a REST update replaced the call."""
        return _json.encode(
            {
                "event": "stop",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
            }
        )
