"""The three GA audio formats as the simulated model hears and speaks them: how many
bytes make a millisecond, how loud a chunk is, and a tone to speak in each. Pure.

A client that never sets ``audio/pcmu`` gets what the real API gives it: its mu-law
bytes read as 24 kHz PCM16 (timestamps six times too short, speech detection off), and
24 kHz PCM16 audio back (noise to a phone line)."""

from __future__ import annotations

import math
import struct
from bisect import bisect_left
from typing import Any, Final

from engine.simulator import mulaw

PCM_RATE_HZ: Final = 24000
_G711_BYTES_PER_MS: Final = mulaw.SAMPLE_RATE_HZ // 1000  # one byte per 8 kHz sample
_PCM_BYTES_PER_MS: Final = 2 * PCM_RATE_HZ // 1000  # 16-bit samples at 24 kHz


def _alaw_decode(byte: int) -> int:
    byte ^= 0x55
    magnitude = (byte & 0x0F) << 4
    segment = (byte & 0x70) >> 4
    if segment == 0:
        magnitude += 8
    elif segment == 1:
        magnitude += 0x108
    else:
        magnitude = (magnitude + 0x108) << (segment - 1)
    return magnitude if byte & 0x80 else -magnitude


_ALAW_LINEAR: Final = tuple(_alaw_decode(b) for b in range(256))
_ALAW_BY_VALUE: Final = sorted((value, byte) for byte, value in enumerate(_ALAW_LINEAR))
_ALAW_VALUES: Final = [value for value, _ in _ALAW_BY_VALUE]


def _alaw_encode(sample: int) -> int:
    """The A-law byte whose value is nearest ``sample`` (a simulator's speed is enough)."""
    index = min(bisect_left(_ALAW_VALUES, sample), len(_ALAW_VALUES) - 1)
    return _ALAW_BY_VALUE[index][1]


def kind(audio_format: dict[str, Any] | None) -> str:
    return str((audio_format or {}).get("type", "audio/pcm"))


def bytes_per_ms(audio_format: dict[str, Any] | None) -> int:
    return _PCM_BYTES_PER_MS if kind(audio_format) == "audio/pcm" else _G711_BYTES_PER_MS


def duration_ms(audio: bytes, audio_format: dict[str, Any] | None) -> int:
    return len(audio) // bytes_per_ms(audio_format)


def mean_amplitude(audio: bytes, audio_format: dict[str, Any] | None) -> float:
    """Average absolute sample (0 to 32767) in the session's input format."""
    name = kind(audio_format)
    if name == "audio/pcmu":
        return mulaw.mean_amplitude(audio)
    if name == "audio/pcma":
        return sum(abs(_ALAW_LINEAR[b]) for b in audio) / len(audio) if audio else 0.0
    samples = struct.unpack(f"<{len(audio) // 2}h", audio[: len(audio) // 2 * 2])
    return sum(abs(s) for s in samples) / len(samples) if samples else 0.0


def tone(duration_ms_: int, audio_format: dict[str, Any] | None) -> bytes:
    """The simulated voice's "speech" in the session's output format."""
    name = kind(audio_format)
    if name == "audio/pcmu":
        return mulaw.tone(duration_ms_)
    rate_hz = PCM_RATE_HZ if name == "audio/pcm" else mulaw.SAMPLE_RATE_HZ
    step = 2 * math.pi * 440.0 / rate_hz
    samples = [int(8000 * math.sin(step * n)) for n in range(rate_hz * duration_ms_ // 1000)]
    if name == "audio/pcma":
        return bytes(_alaw_encode(s) for s in samples)
    return struct.pack(f"<{len(samples)}h", *samples)


def sign_changes(
    audio: bytes, audio_format: dict[str, Any] | None, negative_before: bool
) -> tuple[int, bool]:
    """How often the signal crosses zero in ``audio`` (counting from the sign the audio
    before it ended on, ``negative_before``), and the sign it ends on: the simulated
    model's pitch detector (a tone of f Hz crosses zero 2f times a second)."""
    name = kind(audio_format)
    if name == "audio/pcmu":
        samples: Any = (mulaw.LINEAR[b] for b in audio)
    elif name == "audio/pcma":
        samples = (_ALAW_LINEAR[b] for b in audio)
    else:
        samples = struct.unpack(f"<{len(audio) // 2}h", audio[: len(audio) // 2 * 2])
    changes, negative = 0, negative_before
    for sample in samples:
        if (sample < 0) != negative:
            changes += 1
            negative = not negative
    return changes, negative
