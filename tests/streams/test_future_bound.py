"""The bound on how far an event's time may run ahead of its stream (bad client clocks)."""

from __future__ import annotations

import numpy as np
import pytest

from streams.windows import RESUME_MESSAGES, bound_future, future_reason

HOUR = 3_600_000
DAY = 24 * HOUR


def ts(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


@pytest.mark.parametrize(
    ("events", "stream_ms", "keep"),
    [
        (ts(), 0, []),
        (ts(), None, []),
        # behind or at the stream's time, or within the bound: kept
        (ts(0, -DAY, HOUR), 0, [True, True, True]),
        # one millisecond past the bound: refused
        (ts(HOUR + 1), 0, [False]),
        # a prediction stamped 14 days ahead in a batch of good ones
        (ts(10, 20, 14 * DAY, 30), 0, [True, True, False, True]),
        # the stream's first message: measured from its median
        (ts(5 * DAY, 5 * DAY + 1, 19 * DAY), None, [True, True, False]),
        # a first message of one event: nothing to compare with, kept
        (ts(14 * DAY), None, [True]),
    ],
)
def test_keep(events: np.ndarray, stream_ms: int | None, keep: list[bool]) -> None:
    check = bound_future(events, stream_ms=stream_ms, max_future_ms=HOUR)
    assert check.keep.tolist() == keep
    # a message with an event kept ends any row of messages ahead
    assert (check.ahead is None) == (any(keep) or not keep)


def test_one_message_ahead_among_good_ones_never_moves_the_stream() -> None:
    ahead = None
    for _ in range(10 * RESUME_MESSAGES):
        bad = bound_future(ts(14 * DAY), stream_ms=0, max_future_ms=HOUR, ahead=ahead)
        assert bad.keep.tolist() == [False]
        good = bound_future(ts(1_000), stream_ms=0, max_future_ms=HOUR, ahead=bad.ahead)
        assert good.keep.tolist() == [True]
        ahead = good.ahead
        assert ahead is None


def test_a_stream_that_resumes_after_a_pause_moves_on() -> None:
    ahead = None
    stream_ms = 0
    kept = []
    for i in range(RESUME_MESSAGES + 1):
        events = ts(2 * DAY + i, 2 * DAY + i + 5)
        check = bound_future(events, stream_ms=stream_ms, max_future_ms=HOUR, ahead=ahead)
        ahead = check.ahead
        kept.append(check.keep.tolist())
        if check.keep.any():
            stream_ms = max(stream_ms, int(events[check.keep].max()))
    assert kept == [[False, False]] * (RESUME_MESSAGES - 1) + [[True, True]] * 2


def test_messages_ahead_that_disagree_start_the_row_again() -> None:
    first = bound_future(ts(2 * DAY), stream_ms=0, max_future_ms=HOUR)
    second = bound_future(ts(9 * DAY), stream_ms=0, max_future_ms=HOUR, ahead=first.ahead)
    assert first.ahead == [2 * DAY, 1]
    assert second.ahead == [9 * DAY, 1]


def test_invalid_bound() -> None:
    with pytest.raises(ValueError, match="max_future_ms"):
        bound_future(ts(1), stream_ms=0, max_future_ms=0)


def test_reason_names_time_stream_time_and_bound() -> None:
    text = future_reason(14 * DAY, reference_ms=0, max_future_ms=HOUR, setting="X_MAX")
    assert "1970-01-15T00:00:00+00:00" in text
    assert "1970-01-01T00:00:00+00:00" in text
    assert "336.0 h ahead" in text and "1.0 h allowed (X_MAX)" in text
