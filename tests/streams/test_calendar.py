"""Calendar periods (streams.calendar): a partition of the time line into days, ISO weeks
and months of a time zone, with their DST days and uneven months."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.calendar import CalendarPeriods

ZONES = ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe",
         "America/Santiago", "Asia/Kolkata", "Pacific/Chatham", "America/Sao_Paulo"]
H = 3_600_000
#: 1990-01-01 .. 2040-01-01
LOW, HIGH = 631_152_000_000, 2_208_988_800_000


def _ms(*args: int, tz: str = "UTC") -> int:
    return int(datetime(*args, tzinfo=ZoneInfo(tz)).timestamp() * 1000)


def _local(ms: int, tz: str) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(ZoneInfo(tz))


@settings(max_examples=300, deadline=None)
@given(ms=st.integers(LOW, HIGH), tz=st.sampled_from(ZONES),
       period=st.sampled_from(["day", "week", "month"]))
def test_every_instant_is_in_exactly_one_period(ms: int, tz: str, period: str) -> None:
    def fresh() -> CalendarPeriods:  # (no cached period: each answer computed anew)
        return CalendarPeriods(period, tz)  # type: ignore[arg-type]

    start = fresh().start(ms)
    end = fresh().end(start)
    assert start <= ms < end
    # contiguous: the period before ends where this one starts, the next starts at its end
    before = fresh().start(start - 1)
    assert before < start and fresh().end(before) == start
    assert fresh().start(end) == end
    assert fresh().start(end - 1) == start
    cached = fresh()  # and the cache gives the same answers
    assert [cached.start(t) for t in (ms, start, end - 1, end, start - 1)] == [
        start, start, start, end, before]
    # its start is a local midnight of the period's first day, unless DST skipped it
    local = _local(start, tz)
    before = _local(start - 1, tz)
    assert local.date() > before.date()
    if period == "week":
        assert local.weekday() == 0
    if period == "month":
        assert local.day == 1


@settings(max_examples=60, deadline=None)
@given(ts=st.lists(st.integers(LOW, HIGH), min_size=1, max_size=200),
       tz=st.sampled_from(ZONES), period=st.sampled_from(["day", "week", "month"]))
def test_vectorised_starts_equal_one_by_one(ts: list[int], tz: str, period: str) -> None:
    periods = CalendarPeriods(period, tz)  # type: ignore[arg-type]
    assert periods.starts(np.array(ts, dtype=np.int64)).tolist() == [periods.start(t) for t in ts]


@pytest.mark.parametrize(("day", "hours"), [((2024, 3, 31), 23), ((2024, 10, 27), 25),
                                            ((2024, 7, 14), 24)])
def test_paris_days_across_dst_last_23_and_25_hours(day: tuple[int, int, int], hours: int) -> None:
    periods = CalendarPeriods("day", "Europe/Paris")
    start = periods.start(_ms(*day, 12, tz="Europe/Paris"))
    assert start == _ms(*day, tz="Europe/Paris")
    assert periods.end(start) - start == hours * H


def test_a_day_whose_midnight_dst_skipped_starts_when_the_clock_jumps() -> None:
    # Santiago, 2022-09-11: at 00:00 (-04) clocks jumped to 01:00 (-03).
    periods = CalendarPeriods("day", "America/Santiago")
    start = periods.start(_ms(2022, 9, 11, 12, tz="America/Santiago"))
    assert start == _ms(2022, 9, 11, 4)  # 00:00 -04 == 04:00Z, shown as 01:00 -03
    assert _local(start, "America/Santiago").hour == 1
    assert periods.end(start) - start == 23 * H


def test_weeks_start_monday_and_months_vary() -> None:
    weeks = CalendarPeriods("week", "UTC")
    start = weeks.start(_ms(2026, 12, 4, 5))  # a Friday
    assert start == _ms(2026, 11, 30) and weeks.end(start) == _ms(2026, 12, 7)
    months = CalendarPeriods("month", "Europe/Paris")
    feb = months.start(_ms(2024, 2, 10))
    assert feb == _ms(2024, 2, 1, tz="Europe/Paris")
    assert months.end(feb) == _ms(2024, 3, 1, tz="Europe/Paris")
    assert (months.end(feb) - feb) == 29 * 24 * H
    december = months.start(_ms(2026, 12, 31, 23, 30))  # 00:30 on Jan 1st in Paris
    assert december == _ms(2027, 1, 1, tz="Europe/Paris")


def test_unknown_period_and_zone_are_refused() -> None:
    with pytest.raises(ValueError, match="'year' is not a calendar period"):
        CalendarPeriods("year", "UTC")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'Mars/Olympus' is not a time zone"):
        CalendarPeriods("day", "Mars/Olympus")
