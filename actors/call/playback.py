"""What the caller has heard of the model's audio, from Twilio's marks. Pure.

After each audio delta the actor sends a ``mark`` named ``{item_id}:{sent_ms}``; Twilio
echoes it once the caller has heard that far (docs/wire-formats.md 2.5). On a barge-in the item is
truncated to what was heard, never to more than was generated (the real API refuses a
truncate past the item's audio: "Audio content of N ms is already shorter than M ms").
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class BargeIn:
    """Clear Twilio's buffer and truncate ``item_id`` to ``audio_end_ms``."""

    item_id: str
    audio_end_ms: int
    generated_ms: int


@dataclass(slots=True)
class Playback:
    item_id: str = ""
    response_id: str = ""
    sent_ms: int = 0
    played_ms: int = 0
    generated_ms: dict[str, int] = field(default_factory=dict)
    dropped_responses: set[str] = field(default_factory=set)

    def audio(self, response_id: str, item_id: str, delta_ms: int) -> str | None:
        """A delta of model audio: the mark to send after it, or None if the caller must
        not hear it (its response was interrupted)."""
        self.generated_ms[item_id] = self.generated_ms.get(item_id, 0) + delta_ms
        if response_id in self.dropped_responses:
            return None
        if item_id != self.item_id:
            self.item_id, self.sent_ms, self.played_ms = item_id, 0, 0
        self.response_id = response_id
        self.sent_ms += delta_ms
        return f"{item_id}:{self.sent_ms}"

    def mark(self, name: str) -> None:
        """Twilio echoed a mark: the caller heard that far."""
        item_id, _, ms = name.rpartition(":")
        if item_id == self.item_id and ms.isdigit():
            self.played_ms = min(max(self.played_ms, int(ms)), self.sent_ms)

    @property
    def drained(self) -> bool:
        return self.played_ms >= self.sent_ms

    def barge_in(self) -> BargeIn | None:
        """The caller started speaking: what to cut, if anything is playing."""
        if not self.item_id or self.drained:
            return None  # nothing is playing: the caller is simply taking their turn
        # Deltas of this response may still be on their way: the caller must not hear them.
        self.dropped_responses.add(self.response_id)
        generated_ms = self.generated_ms.get(self.item_id, 0)
        cut = BargeIn(self.item_id, min(self.played_ms, generated_ms), generated_ms)
        self.sent_ms = self.played_ms  # what was cleared will never be heard
        return cut

    def cancelled(self, response_id: str) -> None:
        self.dropped_responses.add(response_id)
