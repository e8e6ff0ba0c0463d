"""When a KPI window is reported: its first report, its revisions, its final report.

A window's reports follow event time (the join's clocks: the largest ``ts``
seen on predictions and on labels), so a replay emits the same ones, and, when
event time stops moving (a quiet stream), processing time:

* **first** (revision 0): once the predictions' clock has passed the window's
  end plus ``allowed_lateness``;
* **revision**: the window changed since its last report (labels joined,
  predictions expired unlabeled, late predictions), and either event time
  moved a whole ``window`` since that report, or, on a timer, nothing changed
  it for ``revision_delay`` of processing time (``now_ms``). So a window's
  revision follows its last labels within ``revision_delay`` (plus the
  timer's period) even when no later event comes;
* **final**: once neither a prediction nor a label can reach it any more (the
  labels' clock ``label_ttl`` past its end, or the predictions' clock twice
  that, should labels stall for good): exactly one report marked final,
  whether or not it changed since the last one; then the window is dropped.

A final report depends only on the events folded in (the same in a replay);
intermediate revisions may come at other times.

The processing time of a window's last change (``changed_ms``) is not part of
its mark: it depends on when the worker ran, and the state the marks live in
holds only what the messages determine (so a replay or a recovery from the
changelog gives the same state). The caller keeps it, in memory.

>>> mark = {"rev": -1, "dirty": True, "emitted_ms": 0}
>>> times = dict(window_ms=60_000, allowed_lateness_ms=0, label_ttl_ms=600_000,
...              revision_delay_ms=5_000)
>>> due(mark, start_ms=0, predictions_ms=30_000, labels_ms=None, now_ms=None, **times)
>>> due(mark, start_ms=0, predictions_ms=60_000, labels_ms=None, now_ms=None, **times)
'report'
>>> mark = {"rev": 0, "dirty": True, "emitted_ms": 60_000}
>>> due(mark, start_ms=0, predictions_ms=60_000, labels_ms=61_000, now_ms=104_999,
...     changed_ms=100_000, **times)
>>> due(mark, start_ms=0, predictions_ms=60_000, labels_ms=61_000, now_ms=105_000,
...     changed_ms=100_000, **times)
'report'
>>> due({**mark, "dirty": False}, start_ms=0, predictions_ms=60_000, labels_ms=660_001,
...     now_ms=None, **times)
'final'
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

Due = Literal["report", "final"]


class WindowMark(TypedDict):
    rev: int  # -1 until first reported
    dirty: bool  # changed since last reported
    emitted_ms: int  # the model's event time at the last report
    #: count windows only (``streams.kpi.series``): its earliest and latest prediction's ts
    first_ms: NotRequired[int]
    last_ms: NotRequired[int]


def due(
    mark: WindowMark,
    *,
    start_ms: int,
    window_ms: int,
    allowed_lateness_ms: int,
    label_ttl_ms: int,
    revision_delay_ms: int,
    predictions_ms: int | None,
    labels_ms: int | None,
    now_ms: int | None,
    changed_ms: int | None = None,
    closed: bool | None = None,
) -> Due | None:
    """What the window starting at ``start_ms`` is due now: a report, its final
    report, or nothing. ``predictions_ms``/``labels_ms``: the join's clocks (None:
    nothing seen yet); ``now_ms``: processing time, None to judge on event time
    only (the per-message path); ``changed_ms``: the processing time of the
    window's last change (None: not known, no revision on the timer); ``closed``: whether
    the window is complete, in place of the watermark rule (count windows: their Nth
    prediction came; ``streams.kpi.series``)."""
    if predictions_ms is None:
        return None
    end = start_ms + window_ms
    passed = end + allowed_lateness_ms <= predictions_ms if closed is None else closed
    retire = (passed and labels_ms is not None and labels_ms > end + label_ttl_ms) or (
        predictions_ms > end + 2 * label_ttl_ms
    )
    if retire:
        return "final"
    if mark["rev"] < 0:
        return "report" if passed else None
    if not mark["dirty"]:
        return None
    event_now = max(predictions_ms, labels_ms if labels_ms is not None else predictions_ms)
    if event_now - mark["emitted_ms"] >= window_ms:
        return "report"
    if now_ms is not None and changed_ms is not None and now_ms - changed_ms >= revision_delay_ms:
        return "report"
    return None
