"""The analytics API's parameters (engine/analytics_params.py), as pure functions: no
engine, no database (tests/test_analytics.py checks the same rules over HTTP)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from engine.analytics_params import (
    MAX_RANGE_DAYS,
    RECENT_DEFAULT,
    RECENT_MAX,
    Cursor,
    InvalidParameter,
    decode_cursor,
    encode_cursor,
    limit,
    window,
)

NOW = datetime(2026, 11, 12, 18, 0, tzinfo=UTC)  # noon in Chicago
CHICAGO = "America/Chicago"


def test_dates_are_whole_local_days_with_to_inclusive() -> None:
    span = window({"from": "2026-11-10", "to": "2026-11-12"}, CHICAGO, NOW)
    assert span.start == datetime(2026, 11, 10, 6, 0, tzinfo=UTC)  # local midnight, CST
    assert span.end == datetime(2026, 11, 13, 6, 0, tzinfo=UTC)
    assert (span.first_day, span.last_day) == (date(2026, 11, 10), date(2026, 11, 12))


def test_a_day_of_the_dst_change_starts_at_its_own_local_midnight() -> None:
    span = window({"from": "2026-11-01", "to": "2026-11-01"}, CHICAGO, NOW)
    assert span.start == datetime(2026, 11, 1, 5, 0, tzinfo=UTC)  # CDT until 02:00
    assert span.end == datetime(2026, 11, 2, 6, 0, tzinfo=UTC)  # a 25-hour day


def test_the_default_is_the_last_30_local_days_up_to_tomorrow() -> None:
    span = window({}, CHICAGO, NOW)
    assert (span.first_day, span.last_day) == (date(2026, 10, 14), date(2026, 11, 12))
    assert span.end == datetime(2026, 11, 13, 6, 0, tzinfo=UTC)


def test_one_bound_given_the_other_is_30_days_away() -> None:
    only_to = window({"to": "2026-06-30"}, CHICAGO, NOW)
    assert (only_to.first_day, only_to.last_day) == (date(2026, 6, 1), date(2026, 6, 30))
    only_from = window({"from": "2026-11-01"}, CHICAGO, NOW)
    assert only_from.last_day == date(2026, 11, 12)  # never past tomorrow's midnight


def test_timestamps_need_an_offset_and_are_taken_as_instants() -> None:
    span = window({"from": "2026-11-10T15:00:00Z", "to": "2026-11-10T16:30:00-06:00"},
                  CHICAGO, NOW)  # fmt: skip
    assert span.start == datetime(2026, 11, 10, 15, 0, tzinfo=UTC)
    assert span.end == datetime(2026, 11, 10, 22, 30, tzinfo=UTC)
    with pytest.raises(InvalidParameter, match="needs an offset") as naive:
        window({"from": "2026-11-10T15:00:00"}, CHICAGO, NOW)
    assert naive.value.field == "from"


@pytest.mark.parametrize(
    ("params", "field", "said"),
    [
        ({"from": "2026-11-12", "to": "2026-11-10"}, "to", "must be after from"),
        ({"from": "2026-02-30"}, "from", "not a calendar date"),
        ({"from": "1999-12-31"}, "from", "must be from 2000-01-01 to 2026-11-13"),
        ({"to": "2026-11-14"}, "to", "must be from 2000-01-01 to 2026-11-13"),
        ({"from": "0001-01-01T00:00:00+14:00"}, "from", "must be from 2000-01-01T00:00:00Z"),
        ({"from": "yesterday"}, "from", "expected a date YYYY-MM-DD or a timestamp"),
        ({"from": "2024-01-01", "to": "2026-01-01"}, "to", f"over {MAX_RANGE_DAYS} days"),
    ],
)
def test_a_bad_bound_names_its_field(params: dict[str, str], field: str, said: str) -> None:
    with pytest.raises(InvalidParameter, match=said) as error:
        window(params, CHICAGO, NOW)
    assert error.value.field == field


def test_statistics_take_dates_only_under_their_own_names() -> None:
    span = window({"start": "2026-11-10", "end": "2026-11-10"}, CHICAGO, NOW,
                  names=("start", "end"), dates_only=True)  # fmt: skip
    assert span.first_day == span.last_day == date(2026, 11, 10)
    with pytest.raises(InvalidParameter, match="expected a date") as error:
        window({"start": "2026-11-10T00:00:00Z"}, CHICAGO, NOW, names=("start", "end"),
               dates_only=True)  # fmt: skip
    assert error.value.field == "start"


@pytest.mark.parametrize("text", ["0", str(RECENT_MAX + 1), "-1", "+5", "1e2", "٣", "", "10000"])
def test_a_limit_outside_its_range_is_refused(text: str) -> None:
    with pytest.raises(InvalidParameter, match=f"from 1 to {RECENT_MAX}"):
        limit({"limit": text})


def test_a_limit_in_range_or_the_default() -> None:
    assert limit({}) == RECENT_DEFAULT
    assert limit({"limit": str(RECENT_MAX)}) == RECENT_MAX


def test_a_cursor_comes_back_as_it_went_and_a_forged_one_is_refused() -> None:
    cursor = Cursor(datetime(2026, 11, 10, 15, 0, 0, 123456, tzinfo=UTC), "CA1")
    assert decode_cursor(encode_cursor(cursor)) == cursor
    assert decode_cursor(None) is None
    for forged in ("%%%", "bm90IGpzb24", "WyIyMDI2LTExLTEwVDE1OjAwOjAwIiwiQ0ExIl0"):
        with pytest.raises(InvalidParameter, match="not a cursor") as error:
            decode_cursor(forged)  # not base64; not JSON; a timestamp without offset
        assert error.value.field == "cursor"
