"""What the engine's edges turned away, and why: one counter per (edge, reason).

A refusal under attack must cost nothing, so the edges count synchronously into this
object (owned by the composition root, like ``Admission``) rather than sending a message
per refusal; ``/metrics`` reads a snapshot as ``afterhours_refusals_total{edge,reason}``.
Both labels come from fixed vocabularies in the code, never from what a client sent, so
the label set stays bounded whatever a stranger does.
"""

from __future__ import annotations

from typing import Literal

# Where a request or connection was refused.
Edge = Literal["voice", "status", "media", "analytics", "admin", "http", "vapi"]


class Refusals:
    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], int] = {}

    def refuse(self, edge: Edge, reason: str) -> None:
        """Count one refusal. ``reason`` is a constant of the caller's (snake_case)."""
        key = (edge, reason)
        self._counts[key] = self._counts.get(key, 0) + 1

    def statistics(self) -> dict[tuple[str, str], int]:
        return dict(self._counts)
