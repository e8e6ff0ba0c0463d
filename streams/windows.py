"""Event-time windows: tumbling, and hopping ones built from panes.

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
