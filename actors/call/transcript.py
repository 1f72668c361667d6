"""The call's transcript in conversation order. Pure.

Events do not arrive in conversation order: the caller's transcription is produced
asynchronously and often lands after the model's answer to it (docs/wire-formats.md 1.15: "clients
must not depend on how audio, transcript and transcription events interleave"). So a
turn takes its place when its item enters the conversation (``input_audio_buffer.committed``
or ``conversation.item.added``, after ``previous_item_id``), and its words fill in when
they arrive. A turn whose item was never announced (a peer that sends no such event)
takes its place on arrival. Caller turns whose words never came are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Role = Literal["caller", "assistant"]


@dataclass(slots=True)
class Turn:
    item_id: str
    role: Role
    offset_ms: int  # when the turn began, from the start of the call
    text: str | None = None  # None: words not (yet) known
    streamed: str = ""  # assistant words so far (a cancelled response sends no .done)
    interrupted: bool = False
    heard_share: float | None = None  # barge-in: the share of its audio the caller heard

    def words(self) -> str | None:
        text = self.text if self.text is not None else (self.streamed.strip() or None)
        if text is None or self.heard_share is None:
            return text
        kept = text.split()
        return " ".join(kept[: round(len(kept) * self.heard_share)])


class Transcript:
    def __init__(self) -> None:
        self._turns: list[Turn] = []
        self._by_item: dict[str, Turn] = {}

    def place(
        self, item_id: str, role: Role, offset_ms: int, previous_item_id: str | None = None
    ) -> Turn:
        """The turn of ``item_id`` (created if new) at its place in the conversation:
        right after ``previous_item_id`` when that turn is known, else last."""
        turn = self._by_item.get(item_id)
        if turn is not None:
            return turn
        turn = Turn(item_id, role, offset_ms)
        self._by_item[item_id] = turn
        index = len(self._turns)
        previous = self._by_item.get(previous_item_id or "")
        if previous is not None and previous is not turn:
            index = self._turns.index(previous) + 1
        self._turns.insert(index, turn)
        return turn

    def caller_said(self, item_id: str, text: str, offset_ms: int) -> None:
        self.place(item_id, "caller", offset_ms).text = text

    def assistant_streamed(self, item_id: str, delta: str, offset_ms: int) -> None:
        self.place(item_id, "assistant", offset_ms).streamed += delta

    def assistant_said(self, item_id: str, text: str, offset_ms: int) -> None:
        self.place(item_id, "assistant", offset_ms).text = text

    def heard(self, item_id: str, heard_ms: int, generated_ms: int) -> None:
        """A barge-in: the caller heard ``heard_ms`` of the item's ``generated_ms``; its
        words are cut to that share (the model's transcript covers all it generated)."""
        turn = self._by_item.get(item_id)
        if turn is None:
            turn = self.place(item_id, "assistant", 0)
        turn.interrupted = True
        turn.heard_share = min(1.0, heard_ms / max(generated_ms, 1))

    def turns(self) -> list[dict[str, Any]]:
        """The record's transcript: ``role``, ``text``, ``offset_ms`` (and
        ``interrupted``), in conversation order, turns without words left out."""
        out: list[dict[str, Any]] = []
        for turn in self._turns:
            words = turn.words()
            if words is None:
                continue
            entry: dict[str, Any] = {"role": turn.role, "text": words, "offset_ms": turn.offset_ms}
            if turn.interrupted:
                entry["interrupted"] = True
            out.append(entry)
        return out
