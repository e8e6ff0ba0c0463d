"""Categorical feature summary: counts of a bounded set of categories plus "other".

State (a plain dict)::

    {"missing": int, "counts": {category: int}, "other": int}

At most ``max_categories`` distinct categories are counted per window; values
beyond that go to ``other``, so state never grows with traffic (about 40 bytes
per tracked category).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TypedDict

import numpy as np
import numpy.typing as npt


class CategoricalState(TypedDict):
    missing: int
    counts: dict[str, int]
    other: int


class CategoricalSummary:
    """Fold over :class:`CategoricalState`.

    >>> s = CategoricalSummary(max_categories=2)
    >>> st = s.update(s.initialize(), ["a", "b", "a", "c", None])
    >>> st["counts"], st["other"], st["missing"]
    ({'a': 2, 'b': 1}, 1, 1)
    """

    MAX_CATEGORIES = 100

    def __init__(self, *, max_categories: int = MAX_CATEGORIES) -> None:
        if max_categories < 1:
            raise ValueError("max_categories must be at least 1")
        self.max_categories = max_categories

    @staticmethod
    def initialize() -> CategoricalState:
        return {"missing": 0, "counts": {}, "other": 0}

    def update(self, state: CategoricalState, values: Sequence[str | None]) -> CategoricalState:
        seen = Counter(values)
        missing = seen.pop(None, 0)
        counts = dict(state["counts"])
        other = state["other"]
        # Most frequent first, so a burst of rare values cannot push out common ones.
        for category, n in seen.most_common():
            assert category is not None
            if category in counts:
                counts[category] += n
            elif len(counts) < self.max_categories:
                counts[category] = n
            else:
                other += n
        return {"missing": state["missing"] + missing, "counts": counts, "other": other}

    def merge(self, a: CategoricalState, b: CategoricalState) -> CategoricalState:
        state = self.update(a, [])
        counts = dict(state["counts"])
        other = a["other"] + b["other"]
        for category, n in sorted(b["counts"].items(), key=lambda kv: -kv[1]):
            if category in counts:
                counts[category] += n
            elif len(counts) < self.max_categories:
                counts[category] = n
            else:
                other += n
        return {"missing": a["missing"] + b["missing"], "counts": counts, "other": other}

    @staticmethod
    def count(state: CategoricalState) -> int:
        return sum(state["counts"].values()) + state["other"]

    @staticmethod
    def top_categories(state: CategoricalState, k: int) -> list[str]:
        """The ``k`` most frequent categories, ties broken by name for determinism."""
        ranked = sorted(state["counts"].items(), key=lambda kv: (-kv[1], kv[0]))
        return [category for category, _ in ranked[:k]]

    @staticmethod
    def bin_counts(state: CategoricalState, categories: Sequence[str]) -> npt.NDArray[np.float64]:
        """Counts of ``categories`` in order, then everything else in a last "other" cell."""
        counts = np.array([state["counts"].get(c, 0) for c in categories], dtype=np.float64)
        total = CategoricalSummary.count(state)
        return np.append(counts, total - counts.sum())
