"""What the engine's edges turned away, and why: one counter per (edge, reason).

A refusal under attack must cost nothing, so the edges count synchronously into this
object (owned by the composition root, like ``Admission``) rather than sending a message
per refusal; ``/metrics`` reads a snapshot as ``afterhours_refusals_total{edge,reason}``.
Both labels come from fixed vocabularies in the code, never from what a client sent, so
the label set stays bounded whatever a stranger does.

``KNOWN_REASONS`` lists each edge's reasons (docs/operations.md, "Refusals"): /metrics
exports them at 0 from the start, so that a rate or an alert sees the first refusal
rather than a series that appears with its first sample (tests/test_ops_metrics.py checks
that every reason the code spells out is listed).
"""

from __future__ import annotations

from typing import Literal

# Where a request or connection was refused.
Edge = Literal["voice", "status", "media", "analytics", "admin", "http", "vapi"]


_WEBHOOK_FORM = ("body_too_large", "too_many_fields", "bad_format", "bad_signature")
KNOWN_REASONS: dict[str, tuple[str, ...]] = {
    "voice": (
        *_WEBHOOK_FORM,
        "unknown_number", "vapi_unavailable", "engine_draining", "engine_at_capacity",
        "engine_overloaded_cpu", "engine_overloaded_loop_lag",
        "vapi_timeout", "vapi_unreachable", "vapi_refused", "vapi_bad_answer",
        "vapi_not_configured",
    ),
    "status": _WEBHOOK_FORM,
    "media": (
        "too_many_connections", "too_many_pending", "handshake_timeout", "bad_handshake",
        "not_found", "bad_signature", "start_timeout", "frames_before_start", "bad_start",
        "bad_token", "ping_flood", "peer_not_reading", "message_too_big", "protocol_error",
    ),
    "analytics": (
        "no_key", "unknown_key", "other_project", "key_rate", "key_concurrency", "lane_full",
    ),
    "admin": ("bad_token", "key_rate", "key_concurrency"),
    "vapi": ("bad_secret", "bad_message", "refused_type", "body_too_large", "store_full"),
}  # fmt: skip


class Refusals:
    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], int] = {}

    def refuse(self, edge: Edge, reason: str) -> None:
        """Count one refusal. ``reason`` is a constant of the caller's (snake_case)."""
        key = (edge, reason)
        self._counts[key] = self._counts.get(key, 0) + 1

    def statistics(self) -> dict[tuple[str, str], int]:
        """What was refused (api/http/prometheus.py adds the known reasons at 0)."""
        return dict(self._counts)
