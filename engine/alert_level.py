"""How severe an alert is: shared by the messages, the settings and every actor that
raises one, so it lives below all of them (engine/messages.py imports nothing above it)."""

from __future__ import annotations

import enum


class AlertLevel(enum.IntEnum):
    """Severity of an alert; alerts below ``Settings.alert_min_level`` are not sent."""

    INFO = 10
    WARNING = 20
    ERROR = 30
    CRITICAL = 40

    @classmethod
    def parse(cls, text: str) -> AlertLevel:
        """``"info"``, ``"warning"``, ``"error"`` or ``"critical"``, in any case."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown alert level {text!r}") from None
