"""The analytics routes' query parameters: parsed and validated, pure.

Windows are in the project's time zone: a date (``YYYY-MM-DD``) means that whole local
day, so ``from=2026-11-01&to=2026-11-30`` is November as the business lived it; a
timestamp with an offset (RFC 3339) is taken as it is. Every problem raises
``InvalidParameter`` naming the parameter.

Every date and timestamp must lie between ``EARLIEST_DAY`` (2000-01-01; no call of this
product is older) and a day after today: year 1 or 9999 would overflow the time-zone
arithmetic here, or reach PostgreSQL as ``-infinity``, so they are refused before either.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import msgspec

MAX_RANGE_DAYS = 366
EARLIEST_DAY = date(2000, 1, 1)
_EARLIEST = datetime.combine(EARLIEST_DAY, time(0), tzinfo=UTC)
LATEST_AHEAD = timedelta(days=1)  # a clock a little ahead, a zone east of the server
DEFAULT_DAYS = 30
RECENT_DEFAULT, RECENT_MAX = 20, 100
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DIGITS = re.compile(r"[0-9]{1,4}")


class InvalidParameter(ValueError):
    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open span of time [start, end) and the local days it covers."""

    start: datetime
    end: datetime
    first_day: date
    last_day: date
    timezone: str


@dataclass(frozen=True, slots=True)
class Cursor:
    started_at: datetime
    call_sid: str


def window(
    params: dict[str, str],
    timezone: str,
    now: datetime,
    *,
    names: tuple[str, str] = ("from", "to"),
    dates_only: bool = False,
) -> Window:
    """``names`` (from, to) as local dates or timestamps; by default the last 30 local
    days up to ``now``."""
    zone = ZoneInfo(timezone)
    today = now.astimezone(zone).date()
    first_name, last_name = names
    bounds = _Bounds(today + LATEST_AHEAD, now + LATEST_AHEAD)
    start = _moment(params.get(first_name), first_name, zone, dates_only, bounds, end_of_day=False)
    end = _moment(params.get(last_name), last_name, zone, dates_only, bounds, end_of_day=True)
    tomorrow = _local_midnight(today + timedelta(days=1), zone)
    back = timedelta(days=DEFAULT_DAYS - 1)
    if start is None and end is None:
        start, end = _local_midnight(today - back, zone), tomorrow
    elif start is None:
        assert end is not None
        last = (end - timedelta(microseconds=1)).astimezone(zone).date()
        start = _local_midnight(last - back, zone)
    elif end is None:
        first = start.astimezone(zone).date()
        end = min(tomorrow, _local_midnight(first + back + timedelta(days=1), zone))
    if end <= start:
        raise InvalidParameter(last_name, f"must be after {first_name}")
    first_day = start.astimezone(zone).date()
    last_day = (end - timedelta(microseconds=1)).astimezone(zone).date()
    if (last_day - first_day).days + 1 > MAX_RANGE_DAYS:
        raise InvalidParameter(last_name, f"the range is over {MAX_RANGE_DAYS} days")
    return Window(start, end, first_day, last_day, timezone)


def limit(params: dict[str, str]) -> int:
    text = params.get("limit")
    if text is None:
        return RECENT_DEFAULT
    if _DIGITS.fullmatch(text) is None or not 1 <= int(text) <= RECENT_MAX:
        raise InvalidParameter("limit", f"expected an integer from 1 to {RECENT_MAX}")
    return int(text)


def encode_cursor(cursor: Cursor) -> str:
    raw = msgspec.json.encode([cursor.started_at.isoformat(), cursor.call_sid])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str | None) -> Cursor | None:
    if text is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        started_at, call_sid = msgspec.json.decode(raw, type=tuple[str, str])
        moment = datetime.fromisoformat(started_at)
    except (binascii.Error, msgspec.DecodeError, ValueError):
        raise InvalidParameter("cursor", "not a cursor this API returned") from None
    if moment.tzinfo is None:
        raise InvalidParameter("cursor", "not a cursor this API returned")
    return Cursor(moment, call_sid)


@dataclass(frozen=True, slots=True)
class _Bounds:
    """The latest local day and the latest moment a parameter may name."""

    last_day: date
    last_moment: datetime


def _moment(
    text: str | None,
    name: str,
    zone: ZoneInfo,
    dates_only: bool,
    bounds: _Bounds,
    *,
    end_of_day: bool,
) -> datetime | None:
    if text is None:
        return None
    if _DATE.fullmatch(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise InvalidParameter(name, f"{text!r} is not a calendar date") from None
        if not EARLIEST_DAY <= day <= bounds.last_day:
            raise InvalidParameter(name, f"must be from {EARLIEST_DAY} to {bounds.last_day}")
        return _local_midnight(day + timedelta(days=1) if end_of_day else day, zone)
    if dates_only:
        raise InvalidParameter(name, f"expected a date YYYY-MM-DD, got {text!r}")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidParameter(
            name, f"expected a date YYYY-MM-DD or a timestamp with an offset, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        raise InvalidParameter(name, "a timestamp needs an offset (e.g. Z or -06:00)")
    # Compared as they are (aware datetimes compare without conversion): converting year 1
    # or 9999 with an offset would overflow.
    if not _EARLIEST <= moment <= bounds.last_moment:
        last = bounds.last_moment.isoformat(timespec="seconds").replace("+00:00", "Z")
        raise InvalidParameter(name, f"must be from {_EARLIEST.date()}T00:00:00Z to {last}")
    return moment.astimezone(UTC)


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
