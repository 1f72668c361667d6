"""G.711 mu-law arithmetic for the simulators (never on the engine's own audio path,
which passes mu-law through untouched). Pure."""

from __future__ import annotations

import math
from typing import Final

SAMPLE_RATE_HZ: Final = 8000
FRAME_BYTES: Final = 160  # 20 ms
SILENCE: Final = 0xFF


def _decode(byte: int) -> int:
    byte = ~byte & 0xFF
    sign = byte & 0x80
    exponent = (byte >> 4) & 0x07
    mantissa = byte & 0x0F
    magnitude = ((mantissa << 3) + 0x84) << exponent
    return -(magnitude - 0x84) if sign else magnitude - 0x84


def _encode(sample: int) -> int:
    sample = max(-32635, min(32635, sample))
    sign = 0x80 if sample < 0 else 0
    magnitude = abs(sample) + 0x84
    exponent = 7
    for candidate in range(7, -1, -1):
        if magnitude & (0x4000 >> (7 - candidate)):
            exponent = candidate
            break
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


LINEAR: Final = tuple(_decode(b) for b in range(256))
_ABS_LINEAR: Final = tuple(abs(v) for v in LINEAR)


def mean_amplitude(audio: bytes) -> float:
    """Average absolute amplitude (0 to 32767): the simulated model's voice detector."""
    if not audio:
        return 0.0
    return sum(_ABS_LINEAR[b] for b in audio) / len(audio)


def tone(duration_ms: int, frequency_hz: float = 440.0, amplitude: int = 8000) -> bytes:
    """A sine tone in mu-law: the simulated voices' "speech"."""
    count = SAMPLE_RATE_HZ * duration_ms // 1000
    step = 2 * math.pi * frequency_hz / SAMPLE_RATE_HZ
    return bytes(_encode(int(amplitude * math.sin(step * n))) for n in range(count))


def silence(duration_ms: int) -> bytes:
    return bytes([SILENCE]) * (SAMPLE_RATE_HZ * duration_ms // 1000)
