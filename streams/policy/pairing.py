"""Which champion windows a canary's or challenger's KPI window is compared with.

Windows of time (durations, calendar periods) pair by their start: both variants'
windows of one start cover the same time. KPI count windows (``{events: N}``) are
counted on each variant's own predictions, so two variants' windows almost never
share a start: a variant's count window is compared with the champion's windows
whose ``[window_start, window_end)`` overlaps its span, *pooled*. The comparison
(``stats.worse_than``) reads only an error count and a labeled count from the
champion's side, and both add up over windows (``errors`` is each window's wrong
labeled predictions): the pool is their sums. Nothing else of the champion's
windows is read (its status and serving limits are judged on its own windows),
so nothing else needs pooling. A champion window only partly inside the span
counts whole: its predictions are not kept, only its summary.

The pool is *complete* once a champion window of the champion version ends at or
after the variant window's end (the champion's count has gone past it; its
windows close in number order, so the earlier ones are in); until then the
comparison waits, and whichever report completes it (the variant's or a later
champion window) runs it. It is refused (with the reason, for the log) when a
champion window that may have overlapped the span was already let go by the
state's bound (``ModelState.dropped_end``): a pool missing some of its windows
would be a verdict on part of the evidence.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from streams.policy.state import MAX_POOLED, WindowSummary


@dataclass(frozen=True)
class Pool:
    """The champion's side of one comparison: its windows, errors and labels summed."""

    windows: tuple[WindowSummary, ...]
    errors: int
    n_labeled: int

    @staticmethod
    def of(windows: Iterable[WindowSummary]) -> Pool | None:
        """The windows pooled; None when one with labels has no error count (regression:
        the comparison needs errors). Windows without labels add nothing."""
        kept = tuple(windows)
        if any(w.errors is None and w.n_labeled > 0 for w in kept):
            return None
        return Pool(kept, sum(w.errors or 0 for w in kept), sum(w.n_labeled for w in kept))

    def describe(self, variant: WindowSummary) -> str:
        """The pooled numbers, for a command's reason."""
        names = ", ".join(name(w) for w in self.windows)
        return (f"{variant.variant} {variant.model_version} window {name(variant)}: "
                f"{variant.errors} errors in {variant.n_labeled} labeled; champion "
                f"{self.windows[0].model_version} windows {names} overlapping it, pooled: "
                f"{self.errors} errors in {self.n_labeled} labeled")


def name(w: WindowSummary) -> str:
    """A window's name in a reason: its number (count windows), else its start (ms)."""
    return f"#{w.window_index}" if w.window_index is not None else f"from {w.window_start}"


def overlaps(a: WindowSummary, b: WindowSummary) -> bool:
    return a.window_start < b.window_end and b.window_start < a.window_end


def pooled(
    champion: list[WindowSummary], dropped_end: int | None, variant: WindowSummary,
    version: str | None,
) -> tuple[Pool | None, str]:
    """The champion's windows (of ``version``; any with None) pooled against ``variant``'s
    count window, or None and why not: empty while the pool is not complete yet (or
    cannot be pooled), a sentence when windows it needs were let go."""
    mine = [c for c in champion if version is None or c.model_version == version]
    if not any(c.window_end >= variant.window_end for c in mine):
        return None, ""  # the champion's windows have not reached its end yet
    if dropped_end is not None and dropped_end > variant.window_start:
        return None, (f"{variant.variant} {variant.model_version} window {name(variant)} not "
                      f"compared: champion windows that may overlap it were let go (the "
                      f"policy agent keeps the champion's newest {MAX_POOLED} count windows)")
    pool = Pool.of(c for c in mine if overlaps(c, variant))
    if pool is None or not pool.windows:
        return None, ""
    return pool, ""


def windows_beside(weight: float) -> int:
    """About how many champion count windows one canary count window overlaps at canary
    ``weight`` (both counted to the same N): (1 - w) / w of them, plus one at an edge.

    >>> windows_beside(0.1), windows_beside(0.01)
    (10, 100)
    """
    return math.ceil(round((1 - weight) / weight, 9)) + 1


def affected(
    variant: WindowSummary, champ: WindowSummary, champion: list[WindowSummary], judged: bool,
) -> bool:
    """Does the report of the champion's window ``champ`` (already in ``champion``, the
    champion's kept windows) change ``variant``'s comparison: it is in the pool, or
    (not judged yet) it is the first of its version to reach past the variant's end,
    completing the pool. Other champion reports leave the comparison as it was."""
    if overlaps(variant, champ):
        return True
    if judged or champ.window_end < variant.window_end:
        return False
    return not any(c.window_end >= variant.window_end for c in champion
                   if c.model_version == champ.model_version
                   and (c.window_index, c.window_start) != (champ.window_index, champ.window_start))
