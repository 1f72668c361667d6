"""The simulated model's faults as one line of text, for the embedded model of a running
engine (``SIMULATOR_FAULTS``; tests set the knobs on ``SimulatedModel`` directly).

    fail_responses=2:rate_limit_exceeded, late_transcription, reset_handshakes=1

Names: ``fail_responses=N[:code]``, ``reset_handshakes=N``, ``late_transcription``,
``omit_function_name``, ``ignore_output_format``. Pure, except ``apply``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from engine.simulator.model import SimulatedModel

FLAGS: Final = ("late_transcription", "omit_function_name", "ignore_output_format")
FAILURE_CODES: Final = ("server_error", "rate_limit_exceeded")


@dataclass(frozen=True, slots=True)
class Faults:
    fail_responses: int = 0
    fail_code: str = "server_error"
    reset_handshakes: int = 0
    late_transcription: bool = False
    omit_function_name: bool = False
    ignore_output_format: bool = False


def parse(text: str) -> Faults:
    """``ValueError`` naming the part it cannot read."""
    counts: dict[str, int] = {}
    flags: set[str] = set()
    fail_code = "server_error"
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name in FLAGS and not value:
            flags.add(name)
        elif name == "reset_handshakes":
            counts[name] = _count(part, value)
        elif name == "fail_responses":
            count, _, code = value.partition(":")
            counts[name] = _count(part, count)
            fail_code = code or fail_code
            if fail_code not in FAILURE_CODES:
                raise ValueError(f"{part!r}: the code is one of {', '.join(FAILURE_CODES)}")
        else:
            known = ", ".join(("fail_responses=N[:code]", "reset_handshakes=N", *FLAGS))
            raise ValueError(f"unknown fault {part!r}; known: {known}")
    return Faults(
        fail_responses=counts.get("fail_responses", 0),
        fail_code=fail_code,
        reset_handshakes=counts.get("reset_handshakes", 0),
        **{flag: flag in flags for flag in FLAGS},
    )


def _count(part: str, value: str) -> int:
    if not value.isdigit():
        raise ValueError(f"{part!r}: expected a count (fail_responses=2)")
    return int(value)


def apply(model: SimulatedModel, faults: Faults) -> None:
    model.fail_responses(faults.fail_responses, faults.fail_code)
    model.reset_handshakes(faults.reset_handshakes)
    model.late_transcription = faults.late_transcription
    model.omit_function_name = faults.omit_function_name
    model.ignore_output_format = faults.ignore_output_format
