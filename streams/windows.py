"""Event-time windows: tumbling, and hopping ones built from panes; calendar periods.

A window ``[start, start + window_ms)`` is *closed* once the watermark (the
largest event time seen) passes ``end + allowed_lateness_ms``. An event whose
window is already closed is *late*: it is counted as late, never silently
dropped, and does not change a report already sent.

Hopping windows (a window of ``window_ms`` starts every ``hop_ms``, which
divides it) are counted in *panes*: tumbling windows of ``hop_ms``. Each event
updates one pane, and a window's summary is the merge of its
``window_ms / hop_ms`` panes when it closes, so the cost per event does not
grow with the overlap (the "panes" technique of Li et al., "No pane, no gain",
SIGMOD Record 2005). An event is late once the first window it belongs to has
closed; then it is counted in none of its windows, so that every window of an
event agrees on whether it was counted.

A policy's ``window`` (``schemas.windows``) picks the scheme (``scheme``):
``FixedWindows`` for durations (with ``hop``), ``CalendarWindows`` for the
periods of a time zone (tumbling windows of varying length, ``streams.calendar``),
and, for counts of events, ``FixedWindows(1, 1)`` over chunk indices (the drift
monitor gives each event ``position // events`` as its time).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from schemas.windows import CalendarWindow, CountWindow
from streams.calendar import CalendarPeriods


def window_starts_ms(ts_ms: npt.NDArray[np.int64], window_ms: int) -> npt.NDArray[np.int64]:
    """Start of each event's tumbling window, aligned to the epoch.

    >>> window_starts_ms(np.array([0, 59_999, 60_000, 125_000]), 60_000).tolist()
    [0, 0, 60000, 120000]
    """
    if window_ms <= 0:
        raise ValueError("window_ms must be positive")
    return ts_ms - np.mod(ts_ms, window_ms)


def closable(
    starts_ms: list[int],
    *,
    watermark_ms: int,
    window_ms: int,
    allowed_lateness_ms: int,
    max_open: int,
) -> list[int]:
    """Window starts that must close now, oldest first.

    A window closes when the watermark passes its end plus the allowed
    lateness, or when more than ``max_open`` windows are open (the bound on
    state): then the oldest close early.

    >>> closable([0, 60_000, 120_000], watermark_ms=135_000, window_ms=60_000,
    ...          allowed_lateness_ms=10_000, max_open=8)
    [0, 60000]
    >>> closable([0, 60_000, 120_000], watermark_ms=0, window_ms=60_000,
    ...          allowed_lateness_ms=0, max_open=2)
    [0]
    """
    return hopping_closable(starts_ms, closed_until_ms=None, watermark_ms=watermark_ms,
                            window_ms=window_ms, hop_ms=window_ms,
                            allowed_lateness_ms=allowed_lateness_ms, max_panes=max_open)


def hopping_closable(
    panes_ms: list[int],
    *,
    closed_until_ms: int | None,
    watermark_ms: int,
    window_ms: int,
    hop_ms: int,
    allowed_lateness_ms: int,
    max_panes: int,
) -> list[int]:
    """Starts of the hopping windows that must close now, oldest first.

    ``panes_ms``: the starts of the panes kept; ``closed_until_ms``: the end of
    the last window closed. The window starting at ``s`` is made of the panes
    ``s, s + hop_ms, ..., s + window_ms - hop_ms``; the caller drops pane ``s``
    when that window closes (it is the last window of the pane). A window closes
    when the watermark passes its end plus the allowed lateness, or early, oldest
    first, while more than ``max_panes`` panes would be kept (the bound on state).
    With ``hop_ms == window_ms`` this is ``closable`` with ``max_open = max_panes``.

    >>> hopping_closable([0, 60_000], closed_until_ms=None, watermark_ms=130_000,
    ...                  window_ms=120_000, hop_ms=60_000, allowed_lateness_ms=0, max_panes=8)
    [-60000, 0]
    >>> hopping_closable([0, 60_000, 120_000], closed_until_ms=None, watermark_ms=0,
    ...                  window_ms=120_000, hop_ms=60_000, allowed_lateness_ms=0, max_panes=2)
    [-60000, 0]
    """
    if hop_ms <= 0 or window_ms % hop_ms:
        raise ValueError("hop_ms must be positive and divide window_ms")
    panes = sorted(panes_ms)
    starts = sorted({s for p in panes for s in range(p - window_ms + hop_ms, p + 1, hop_ms)})
    if closed_until_ms is not None:
        starts = [s for s in starts if s + window_ms > closed_until_ms]
    due = [s for s in starts if s + window_ms + allowed_lateness_ms <= watermark_ms]
    kept = [p for p in panes if not due or p > due[-1]]
    for s in starts[len(due):]:
        if len(kept) <= max_panes:
            break
        due.append(s)
        kept = [p for p in kept if p > s]
    return due


@dataclass(frozen=True)
class FixedWindows:
    """Windows of ``window_ms`` starting every ``hop_ms`` (tumbling when equal), aligned
    to the epoch, counted in panes of ``hop_ms``: what ``hopping_closable`` closes.

    >>> w = FixedWindows(120_000, 60_000)
    >>> w.pane_end(60_000), w.window_end(60_000), w.panes(0), w.windows_of(60_000)
    (120000, 180000, [0, 60000], [0, 60000])
    """

    window_ms: int
    hop_ms: int

    @property
    def tumbling(self) -> bool:
        return self.hop_ms == self.window_ms

    @property
    def panes_per_window(self) -> int:
        return self.window_ms // self.hop_ms

    def pane_starts(self, ts_ms: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        return window_starts_ms(ts_ms, self.hop_ms)

    def pane_end(self, start_ms: int) -> int:
        return start_ms + self.hop_ms

    def start(self, ts_ms: int) -> int:
        """The start of the (first) pane holding ``ts_ms`` (one event)."""
        return ts_ms - ts_ms % self.hop_ms

    def window_end(self, start_ms: int) -> int:
        return start_ms + self.window_ms

    def panes(self, start_ms: int, first_ms: int | None = None) -> list[int]:
        """The panes of the window starting at ``start_ms`` (from ``first_ms`` on)."""
        first = start_ms if first_ms is None else first_ms
        return list(range(first, start_ms + self.window_ms, self.hop_ms))

    def windows_of(self, pane_ms: int) -> list[int]:
        """The starts of the windows holding the pane ``pane_ms``."""
        return list(range(pane_ms - self.window_ms + self.hop_ms, pane_ms + 1, self.hop_ms))

    def due(self, panes_ms: list[int], *, closed_until_ms: int | None, watermark_ms: int,
            allowed_lateness_ms: int, max_panes: int) -> list[int]:
        return hopping_closable(panes_ms, closed_until_ms=closed_until_ms,
                                watermark_ms=watermark_ms, window_ms=self.window_ms,
                                hop_ms=self.hop_ms, allowed_lateness_ms=allowed_lateness_ms,
                                max_panes=max_panes)


@dataclass(frozen=True)
class CalendarWindows:
    """Tumbling windows that are calendar periods (``streams.calendar``): each is its
    own pane, and lasts from its start to the next period's (23 to 25 h for a day,
    28 to 31 days for a month). Same interface as ``FixedWindows``."""

    periods: CalendarPeriods
    tumbling = True
    panes_per_window = 1

    def pane_starts(self, ts_ms: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        return self.periods.starts(ts_ms)

    def pane_end(self, start_ms: int) -> int:
        return self.periods.end(start_ms)

    def start(self, ts_ms: int) -> int:
        """The start of the window holding ``ts_ms`` (one event)."""
        return self.periods.start(ts_ms)

    window_end = pane_end

    def panes(self, start_ms: int, first_ms: int | None = None) -> list[int]:
        return [start_ms] if first_ms is None or first_ms <= start_ms else []

    def windows_of(self, pane_ms: int) -> list[int]:
        return [pane_ms]

    def due(self, panes_ms: list[int], *, closed_until_ms: int | None, watermark_ms: int,
            allowed_lateness_ms: int, max_panes: int) -> list[int]:
        return tumbling_closable(panes_ms, self.periods.end, closed_until_ms=closed_until_ms,
                                 watermark_ms=watermark_ms,
                                 allowed_lateness_ms=allowed_lateness_ms, max_open=max_panes)


def scheme(window: int | CalendarWindow | CountWindow,
           hop_ms: int | None = None) -> FixedWindows | CalendarWindows:
    """How a policy's ``window`` (``schemas.windows``) cuts time into panes and windows.

    Count windows are tumbling windows of 1 in *chunk-index* time: the caller gives
    each event the index ``position // events`` as its time (``streams.drift.monitor``).

    >>> scheme(60_000), scheme(CountWindow(events=500))
    (FixedWindows(window_ms=60000, hop_ms=60000), FixedWindows(window_ms=1, hop_ms=1))
    """
    if isinstance(window, CalendarWindow):
        return CalendarWindows(CalendarPeriods(window.calendar, window.time_zone))
    if isinstance(window, CountWindow):
        return FixedWindows(1, 1)
    return FixedWindows(window, hop_ms or window)


#: a window of event time: a duration (ms) or a calendar period
TimeWindow = int | CalendarWindow

#: the longest window of each calendar period (31 days; a 25 h day; a week with one)
_LONGEST_MS = {"day": 25 * 3_600_000, "week": 7 * 86_400_000 + 3_600_000,
               "month": 31 * 86_400_000 + 3_600_000}


@lru_cache(maxsize=64)
def tumbling(window: int | CalendarWindow) -> FixedWindows | CalendarWindows:
    """The tumbling windows of a duration or calendar ``window`` (cached: one zone
    look-up per form)."""
    return scheme(window)


def longest_ms(window: int | CalendarWindow) -> int:
    """How long a window of this form lasts at most: what sizes time buckets and
    bounds (``label_ttl / window``) are stated in.

    >>> longest_ms(60_000), longest_ms(CalendarWindow(calendar="day")) / 3_600_000
    (60000, 25.0)
    """
    return _LONGEST_MS[window.calendar] if isinstance(window, CalendarWindow) else window


def tumbling_closable(
    starts_ms: list[int],
    end_of: Callable[[int], int],
    *,
    closed_until_ms: int | None,
    watermark_ms: int,
    allowed_lateness_ms: int,
    max_open: int,
) -> list[int]:
    """``closable`` for tumbling windows of varying length (``end_of(start)``).

    >>> tumbling_closable([0, 60_000, 120_000], lambda s: s + 60_000, closed_until_ms=None,
    ...                   watermark_ms=135_000, allowed_lateness_ms=10_000, max_open=8)
    [0, 60000]
    """
    starts = sorted(starts_ms)
    if closed_until_ms is not None:
        starts = [s for s in starts if end_of(s) > closed_until_ms]
    due = [s for s in starts if end_of(s) + allowed_lateness_ms <= watermark_ms]
    rest = starts[len(due):]  # ends grow with starts: the due windows come first
    while len(rest) > max_open:
        due.append(rest.pop(0))
    return due


#: messages in a row, every event beyond the bound and within it of each other, that
#: show the stream itself moved on (traffic resuming after a pause), not a bad clock
RESUME_MESSAGES = 3


@dataclass(frozen=True)
class FutureCheck:
    """What :func:`bound_future` decided for one message's events of one stream."""

    #: True for the events to keep; False for those too far ahead (dead-letter them)
    keep: npt.NDArray[np.bool_]
    #: the stream time the bound was measured from
    reference_ms: int
    #: ``[median ts, messages]`` of the messages in a row wholly beyond the bound, or
    #: None: store it with the stream's state and pass it back with the next message
    ahead: list[int] | None


def bound_future(
    ts_ms: npt.NDArray[np.int64],
    *,
    stream_ms: int | None,
    max_future_ms: int,
    ahead: list[int] | None = None,
) -> FutureCheck:
    """Which of one message's events of a stream are within ``max_future_ms`` of
    the stream's time.

    One event stamped far ahead (a client with a bad clock) would move a stream's
    watermark: every open window would close, every pending prediction expire.
    So an event is kept only if its ``ts_ms`` is at most ``max_future_ms`` past
    the reference: the stream's time ``stream_ms`` (the largest ts accepted so far;
    for the stream's first message, which has none, the median of its events, so
    one bad event of a batch is still caught). The events beyond are to be
    dead-lettered; the stream's time does not move for them.

    A stream whose traffic resumes after a pause longer than the bound is ahead
    as a whole: ``RESUME_MESSAGES`` messages in a row whose events are all beyond
    the bound, with medians within the bound of the first one's, are taken as the
    stream's new time (the earlier ones of the row are dead-lettered). Any message
    with an event within the bound ends the row. Deterministic (no clock), so a
    replay keeps and drops the same events.

    >>> import numpy as np
    >>> check = bound_future(np.array([1_000, 2_000, 90_000]), stream_ms=1_500,
    ...                      max_future_ms=60_000)
    >>> check.keep.tolist(), check.reference_ms, check.ahead
    ([True, True, False], 1500, None)
    >>> bound_future(np.array([5_000, 6_000, 9_999_000]), stream_ms=None,
    ...              max_future_ms=60_000).keep.tolist()
    [True, True, False]
    >>> ahead = None
    >>> for _ in range(RESUME_MESSAGES):
    ...     check = bound_future(np.array([500_000]), stream_ms=0, max_future_ms=60_000,
    ...                          ahead=ahead)
    ...     ahead = check.ahead
    ...     print(check.keep.tolist(), ahead)
    [False] [500000, 1]
    [False] [500000, 2]
    [True] None
    """
    if max_future_ms <= 0:
        raise ValueError("max_future_ms must be positive")
    ts = np.asarray(ts_ms, dtype=np.int64)
    if ts.size == 0:
        return FutureCheck(np.ones(0, dtype=bool), stream_ms or 0, ahead)
    reference = stream_ms if stream_ms is not None else int(np.median(ts))
    keep = ts <= reference + max_future_ms
    if keep.any():
        return FutureCheck(keep, reference, None)
    mid = int(np.median(ts))
    if ahead is not None and abs(mid - ahead[0]) <= max_future_ms:
        row = [ahead[0], ahead[1] + 1]
    else:
        row = [mid, 1]
    if row[1] >= RESUME_MESSAGES:
        return FutureCheck(np.ones(ts.size, dtype=bool), reference, None)
    return FutureCheck(keep, reference, row)


def future_reason(ts_ms: int, *, reference_ms: int, max_future_ms: int, setting: str) -> str:
    """The dead letter's sentence for an event too far ahead of its stream.

    >>> future_reason(1_209_600_000, reference_ms=0, max_future_ms=3_600_000,
    ...               setting="DRIFTLINE_MAX_FUTURE_S")  # doctest: +NORMALIZE_WHITESPACE
    "event time 1970-01-15T00:00:00+00:00 is 336.0 h ahead of its stream's time
    1970-01-01T00:00:00+00:00, beyond the 1.0 h allowed (DRIFTLINE_MAX_FUTURE_S): the
    producer's clock is probably wrong; fix it and send the event again. (If the
    stream really resumed after a pause, 3 messages in a row this far ahead move it on.)"
    """
    ahead_h = (ts_ms - reference_ms) / 3_600_000
    return (
        f"event time {_iso(ts_ms)} is {ahead_h:.1f} h ahead of its stream's time "
        f"{_iso(reference_ms)}, beyond the {max_future_ms / 3_600_000:.1f} h allowed "
        f"({setting}): the producer's clock is probably wrong; fix it and send the event "
        f"again. (If the stream really resumed after a pause, {RESUME_MESSAGES} messages in "
        "a row this far ahead move it on.)"
    )


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()
