"""Calendar periods of a time zone (days, ISO weeks, months) as UTC millisecond bounds.

A period of local date ``d`` starts at the first instant whose local date (in the
zone) is ``d`` or later: local midnight, or, where a DST change skips midnight
(America/Santiago, Asia/Beirut...), the instant the clock jumps past it. So the
periods' starts increase strictly, and the periods ``[start, next start)`` cover
the time line with neither gap nor overlap: every instant belongs to exactly one.
A day is 23 or 25 hours on a DST change; a month is 28 to 31 days. Weeks start on
Monday (ISO 8601).

Only ``zoneinfo`` (the IANA database of the system, or the ``tzdata`` package)
is read, and no clock: the same events give the same periods on every worker and
every replay, as long as the zone database is the same version.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Literal

import numpy as np
import numpy.typing as npt

from schemas.windows import zone

Period = Literal["day", "week", "month"]
PERIODS: tuple[Period, ...] = ("day", "week", "month")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_DAY_MS = 86_400_000


class CalendarPeriods:
    """The days, weeks or months of ``time_zone``.

    >>> paris = CalendarPeriods("day", "Europe/Paris")
    >>> start = paris.start(1711846800000)  # 2024-03-31T01:00Z, the spring-forward day
    >>> datetime.fromtimestamp(start / 1000, UTC).isoformat()
    '2024-03-30T23:00:00+00:00'
    >>> (paris.end(start) - start) / 3_600_000
    23.0
    """

    def __init__(self, period: Period, time_zone: str) -> None:
        if period not in PERIODS:
            raise ValueError(f"{period!r} is not a calendar period ({', '.join(PERIODS)})")
        self.period = period
        self.zone = zone(time_zone)
        # A cache, not state: the last period found, as (start, end); events come
        # mostly in time order, so most look-ups are in it.
        self._last = (0, 0)

    def __repr__(self) -> str:
        return f"CalendarPeriods({self.period!r}, {self.zone.key!r})"

    # -- one instant -------------------------------------------------------------

    def start(self, ms: int) -> int:
        """The start of the period holding ``ms``."""
        if self._last[0] <= ms < self._last[1]:
            return self._last[0]
        d = self._first_date(self._local_date(ms))
        s = self._first_instant(d)
        while s > ms:  # (a clock set back across midnight: never in today's zones)
            d = self._first_date(d - timedelta(days=1))
            s = self._first_instant(d)
        while (e := self._first_instant(self._next_date(d))) <= ms:
            d, s = self._next_date(d), e
        self._last = (s, e)
        return s

    def end(self, start_ms: int) -> int:
        """The end of the period starting at ``start_ms`` (the next one's start)."""
        if start_ms == self._last[0] and self._last[1]:
            return self._last[1]
        return self._first_instant(self._next_date(self._first_date(self._local_date(start_ms))))

    # -- many instants -----------------------------------------------------------

    def starts(self, ts_ms: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The period start of each of ``ts_ms``: a few zone look-ups per period the
        events fall in, whatever their number.

        >>> months = CalendarPeriods("month", "UTC")
        >>> months.starts(np.array([0, 2_678_399_999, 2_678_400_000])).tolist()
        [0, 0, 2678400000]
        """
        ts = np.asarray(ts_ms, dtype=np.int64)
        if ts.size == 0:
            return ts.copy()
        first = self.start(int(ts.min()))
        if int(ts.max()) < self.end(first):  # the usual batch: all in one period
            return np.full_like(ts, first)
        values, inverse = np.unique(ts, return_inverse=True)
        out = np.empty_like(values)
        i = 0
        while i < values.size:
            s = self.start(int(values[i]))
            j = int(np.searchsorted(values, self.end(s), side="left"))
            out[i:j] = s
            i = j
        return out[inverse.reshape(-1)]

    # -- dates -------------------------------------------------------------------

    def _local_date(self, ms: int) -> date:
        return (_EPOCH + ms * _MS).astimezone(self.zone).date()

    def _first_date(self, d: date) -> date:
        if self.period == "week":
            return d - timedelta(days=d.weekday())
        if self.period == "month":
            return d.replace(day=1)
        return d

    def _next_date(self, d: date) -> date:
        if self.period == "day":
            return d + timedelta(days=1)
        if self.period == "week":
            return d + timedelta(days=7)
        return date(d.year + d.month // 12, d.month % 12 + 1, 1)

    def _first_instant(self, d: date) -> int:
        """The first instant whose local date is ``d`` or later."""
        # Local midnight; in a DST gap (fold=0) this reads the offset before the
        # change, i.e. the instant of the jump: checked, and searched if not so.
        guess = (datetime(d.year, d.month, d.day, tzinfo=self.zone) - _EPOCH) // _MS
        if self._local_date(guess) >= d > self._local_date(guess - 1):
            return guess
        lo, hi = guess - 2 * _DAY_MS, guess + 2 * _DAY_MS  # local dates: < d, >= d
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self._local_date(mid) >= d:
                hi = mid
            else:
                lo = mid
        return hi
