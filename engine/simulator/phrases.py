"""What the simulated caller says, as the simulated model hears it: a phrasebook that
maps each scripted sentence to the pitch of the tone that "speaks" it. Pure.

The real model only hears audio, so the simulated one must learn what a caller said from
the audio alone: the caller speaks a sentence as a tone at that sentence's pitch, and the
simulated model's "speech recognition" measures the pitch of the speech it heard (zero
crossings) and looks the sentence up here. Nothing passes from caller to model but the
mu-law audio the engine forwards untouched. A pitch not in the book (a test's own tone)
is heard as ``UNCLEAR_WORDS``.
"""

from __future__ import annotations

from typing import Final

# 440 Hz is what every plain ``mulaw.tone()`` (the tests', the benchmarks') sounds like:
# a neutral sentence, so that no scenario is chosen by it.
NEUTRAL: Final = "Hi, I'm calling about my water heater."
PHRASES: Final[dict[float, str]] = {
    440.0: NEUTRAL,
    600.0: "It makes a rumbling noise at night. It's not urgent.",
    800.0: "My basement is flooding, a pipe burst!",
    1000.0: "My kitchen tap is dripping. Can I book a plumber?",
    1200.0: "Yes, nine is fine. I'm Sam, 12 Elm Street, 555 0100.",
}
# Pitches are 160 Hz or more apart; a measured pitch within this of one is that one
# (the detector reads each scripted tone within 0.5 Hz: tests/test_demo_scripts.py).
MATCH_TOLERANCE_HZ: Final = 60.0
UNCLEAR_WORDS: Final = NEUTRAL


def pitch_of(words: str) -> float:
    """The tone the caller speaks ``words`` with; ValueError if the book lacks them."""
    for pitch_hz, phrase in PHRASES.items():
        if phrase == words:
            return pitch_hz
    raise ValueError(f"not in the simulator's phrasebook: {words!r}")


def words_at(pitch_hz: float) -> str:
    """The sentence spoken at ``pitch_hz`` (what the simulated transcription returns)."""
    nearest = min(PHRASES, key=lambda known: abs(known - pitch_hz))
    if abs(nearest - pitch_hz) <= MATCH_TOLERANCE_HZ:
        return PHRASES[nearest]
    return UNCLEAR_WORDS
