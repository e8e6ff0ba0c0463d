"""Windows from panes: a tumbling window is its pane; a hopping window is the merge of
its ``window / hop`` panes when it closes (``streams.windows``), so that each event
is counted once, whatever the overlap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from streams.drift import multivariate as mv
from streams.drift.state import VersionState, WindowAcc, new_window
from streams.summaries.categorical import CategoricalSummary
from streams.summaries.numeric import NumericSummary
from streams.windows import CalendarWindows, FixedWindows


@dataclass(frozen=True)
class Summaries:
    """How a window's numeric and categorical features are summarised (configuration)."""

    numeric: NumericSummary = field(default_factory=NumericSummary)
    categorical: CategoricalSummary = field(default_factory=CategoricalSummary)


def merge(summaries: Summaries, a: WindowAcc, b: WindowAcc, *, moments: bool = True) -> WindowAcc:
    """``a`` and ``b`` together; without ``moments``, no warm-up moments (``mv_halves``)."""
    numeric = dict(a["numeric"])
    for name, st in b["numeric"].items():
        numeric[name] = summaries.numeric.merge(numeric[name], st) if name in numeric else st
    categorical = dict(a["categorical"])
    for name, cst in b["categorical"].items():
        categorical[name] = (
            summaries.categorical.merge(categorical[name], cst) if name in categorical else cst
        )
    merged: WindowAcc = {
        "start_ms": min(a["start_ms"], b["start_ms"]),
        "n": a["n"] + b["n"],
        "numeric": numeric,
        "categorical": categorical,
    }
    if "first_ms" in a or "first_ms" in b:  # count windows: the events' times
        merged["first_ms"] = min(x["first_ms"] for x in (a, b) if "first_ms" in x)
        merged["last_ms"] = max(x["last_ms"] for x in (a, b) if "last_ms" in x)
    if not moments:
        return merged
    ha, hb = a.get("mv_halves"), b.get("mv_halves")
    halves = ha if hb is None else hb if ha is None else mv.merge_halves(ha, hb)
    if halves is not None:
        merged["mv_halves"] = halves
    return merged


def window(
    windows: FixedWindows | CalendarWindows, summaries: Summaries, state: VersionState,
    start: int, since_ms: int | None,
) -> WindowAcc:
    """The window starting at ``start``: its pane when tumbling, else the merge of
    its panes (from ``since_ms`` on, if given)."""
    panes = [
        state["windows"][key]
        for key in map(str, windows.panes(start, since_ms))
        if key in state["windows"]
    ]
    if len(panes) == 1 and panes[0]["start_ms"] == start:
        return panes[0]  # tumbling windows are their panes
    acc = new_window(start)
    for pane in panes:  # not their warm-up moments: the warm-up merges the panes
        acc = merge(summaries, acc, pane, moments=False)
    acc["start_ms"] = start
    if any("mv" in pane or "mv_halves" in pane for pane in panes):
        sums = [pane.get("mv") for pane in panes]  # None: not judged
        acc["mv"] = None if None in sums else mv.sum_errors(cast(list[mv.ErrorSums], sums))
    return acc
