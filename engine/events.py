"""Events the runtime reports about itself, as tiny frozen records (past tense).

The supervisor and the dynamic group publish these through a synchronous ``report``
callback that the composition root wires to non-blocking mailbox sends: reporting never
waits, so a slow metrics actor can never stall a restart or a call.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass


class ExitReason(enum.Enum):
    NORMAL = "normal"  # returned on its own
    STOPPED = "stopped"  # returned after a stop request, within its shutdown budget
    KILLED = "killed"  # cancelled after its shutdown budget ran out
    FAILED = "failed"  # raised an exception
    START_FAILED = "start_failed"  # raised before it reported started


@dataclass(frozen=True, slots=True)
class ChildStarted:
    supervisor: str
    child_id: str
    restart_count: int


@dataclass(frozen=True, slots=True)
class ChildExited:
    supervisor: str
    child_id: str
    reason: ExitReason
    error: str | None
    uptime_s: float
    # The child failed its supervisor's own first start: the error goes up to whoever
    # started the supervisor (the CLI: one line, exit 1), which reports it; not a crash
    # of a running engine. False for a restart that fails to start.
    in_first_start: bool = False


@dataclass(frozen=True, slots=True)
class ChildRestarted:
    supervisor: str
    child_id: str
    restart_count: int


@dataclass(frozen=True, slots=True)
class SupervisorEscalated:
    supervisor: str
    child_id: str
    error: str


SupervisorEvent = ChildStarted | ChildExited | ChildRestarted | SupervisorEscalated

Report = Callable[[SupervisorEvent], None]


def describe_error(exc: BaseException) -> str:
    """One line for an event or a log: type and message, never a traceback. A group
    (an actor's own nursery) is described by the errors inside it."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe_error(inner) for inner in exc.exceptions)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
