"""What the simulated model does on each caller turn: speak, or call a tool.

A scenario is a list of steps consumed one at a time: the model's first response (the
greeting) takes none; every later response takes the next step. ``Say`` speaks a line;
``Call`` calls a function and, once the tool's output comes back, the following step runs
in the same turn (as a real model continues after a tool result).

Which scenario a session plays: the one its instructions name (``[scenario: booking]``
anywhere in a project's instructions: tests pin a scenario so), or else the one the
caller's first words call for (``understood``: what the simulated model heard, see
phrases.py), or else ``conversation``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final


@dataclass(frozen=True, slots=True)
class Say:
    text: str


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    arguments: dict[str, Any]
    after_words: bool = False  # made in the same response as the preceding Say


Step = Say | Call

SCENARIOS: Final[dict[str, tuple[Step, ...]]] = {
    "conversation": (
        Say("I understand. Can you tell me a little more about the problem?"),
        Say("Thank you. Someone will call you back in the morning."),
    ),
    "emergency": (
        Call(
            "classify_call", {"intent": "emergency", "summary": "burst pipe flooding the basement"}
        ),
        Say("That sounds urgent. I'm connecting you to the on-call technician now."),
        Call("transfer_to_on_call", {"reason": "burst pipe"}, after_words=True),
    ),
    "booking": (
        Call("classify_call", {"intent": "routine", "summary": "dripping kitchen tap"}),
        Call("get_slots", {"day": "tomorrow"}),
        Say("I have nine o'clock tomorrow morning. Shall I book it?"),
        Call(
            "book_appointment",
            {
                "slot_id": "slot-1",
                "name": "Sam",
                "phone": "+15550100000",
                "address": "12 Elm Street",
                "problem": "dripping tap",
            },
        ),
        Say("You're booked for nine tomorrow. Goodbye!"),
        Call("end_call", {"reason": "booked"}, after_words=True),
    ),
}

# Words that make a call an emergency or a booking, as a project's instructions describe
# them (docs/example-project.toml): the simulated model's whole "understanding".
_CALLS_FOR: Final = (
    ("emergency", ("flooding", "burst", "sewage", "gas smell", "no heat")),
    ("booking", ("book", "appointment", "dripping")),
)


def understood(words: str) -> str | None:
    """The scenario the caller's words call for, if any."""
    lowered = words.lower()
    for scenario, cues in _CALLS_FOR:
        if any(cue in lowered for cue in cues):
            return scenario
    return None
