"""Event-time tumbling windows.

A window ``[start, start + window_ms)`` is *closed* once the watermark (the
largest event time seen) passes ``end + allowed_lateness_ms``. An event whose
window is already closed is *late*: it is counted as late, never silently
dropped, and does not change a report already sent.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


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
    ordered = sorted(starts_ms)
    due = [s for s in ordered if s + window_ms + allowed_lateness_ms <= watermark_ms]
    overflow = len(ordered) - len(due) - max_open
    if overflow > 0:
        rest = [s for s in ordered if s not in due]
        due.extend(rest[:overflow])
    return due
