"""Splitting a URL someone typed (a setting, a project's function URL)."""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit


def split_url(value: str) -> SplitResult | None:
    """``value`` split, or ``None`` when it cannot be: ``urlsplit`` accepts a port that
    is not a number and raises only when ``.port`` is read, so it is read here."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        return None
    return parts
