"""What the simulated model counts, bounded: it runs inside the engine whenever no OpenAI
key is configured (the default), for as long as the engine runs, so nothing it keeps may
grow with the number of calls.

Counters count everything; of what tests want to read one by one (violations,
truncations, texts...) only the last ``RECENT_EVENTS`` are kept, with a total beside them.
``ModelTally`` is the mutable side (the model and its sessions write it);
``SimulatedModel.statistics()`` hands out a frozen ``ModelStatistics`` copy.
"""

from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Iterable

T = TypeVar("T")

# Each recent window's bound: more than any test reads (a test's calls are a few turns),
# small next to a long-running engine's millions of events.
RECENT_EVENTS = 64


class Recent(Generic[T]):
    """The last ``bound`` items of a kind, oldest first, and how many there were in all."""

    __slots__ = ("_items", "total")

    def __init__(self, bound: int = RECENT_EVENTS) -> None:
        self._items: deque[T] = deque(maxlen=bound)
        self.total = 0

    def add(self, item: T) -> None:
        self._items.append(item)  # the deque's maxlen drops the oldest
        self.total += 1

    def add_all(self, items: Iterable[T]) -> None:
        for item in items:
            self.add(item)

    def snapshot(self) -> tuple[T, ...]:
        return tuple(self._items)


@dataclass(frozen=True, slots=True)
class ModelStatistics:
    sessions_total: int
    sessions_open: int
    client_events_total: int
    sessions_expired: int  # sessions that reached session_max_s
    beta_refused: int  # handshakes that asked for the beta protocol
    handshakes_reset: int  # by reset_handshakes
    turn_detection: dict[str, Any] | None  # as the last session.update set it (a copy)
    # The last RECENT_EVENTS of each, oldest first; *_total counts them all.
    violations: tuple[str, ...]  # client events the GA types refuse
    violations_total: int
    truncations: tuple[tuple[str, int], ...]  # (item_id, audio_end_ms)
    truncations_total: int
    refused: tuple[tuple[str, str | None, str], ...]  # (client event type, code, message)
    refused_total: int
    caller_texts: tuple[str, ...]  # text items (e.g. keypad digits)
    caller_texts_total: int
    assistant_texts: tuple[str, ...]  # restored after a reconnect
    assistant_texts_total: int
    session_crashes: tuple[str, ...]  # simulator bugs, contained
    session_crashes_total: int
    models: tuple[str, ...]  # each session's ?model= at its upgrade (sessions_total in all)
    session_models: tuple[str, ...]  # each session.update's model
    session_models_total: int


class ModelTally:
    """The simulated model's counters as it serves (mutable; its sessions write here)."""

    def __init__(self) -> None:
        self.sessions_total = 0
        self.sessions_open = 0
        self.client_events_total = 0
        self.sessions_expired = 0
        self.beta_refused = 0
        self.handshakes_reset = 0
        self.turn_detection: dict[str, Any] | None = None
        self.violations = Recent[str]()
        self.truncations = Recent[tuple[str, int]]()
        self.refused = Recent[tuple[str, str | None, str]]()
        self.caller_texts = Recent[str]()
        self.assistant_texts = Recent[str]()
        self.session_crashes = Recent[str]()
        self.models = Recent[str]()
        self.session_models = Recent[str]()

    def snapshot(self) -> ModelStatistics:
        return ModelStatistics(
            sessions_total=self.sessions_total,
            sessions_open=self.sessions_open,
            client_events_total=self.client_events_total,
            sessions_expired=self.sessions_expired,
            beta_refused=self.beta_refused,
            handshakes_reset=self.handshakes_reset,
            turn_detection=copy.deepcopy(self.turn_detection),
            violations=self.violations.snapshot(),
            violations_total=self.violations.total,
            truncations=self.truncations.snapshot(),
            truncations_total=self.truncations.total,
            refused=self.refused.snapshot(),
            refused_total=self.refused.total,
            caller_texts=self.caller_texts.snapshot(),
            caller_texts_total=self.caller_texts.total,
            assistant_texts=self.assistant_texts.snapshot(),
            assistant_texts_total=self.assistant_texts.total,
            session_crashes=self.session_crashes.snapshot(),
            session_crashes_total=self.session_crashes.total,
            models=self.models.snapshot(),
            session_models=self.session_models.snapshot(),
            session_models_total=self.session_models.total,
        )
