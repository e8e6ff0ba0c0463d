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

from streams.batch import Categories


class CategoricalState(TypedDict):
    missing: int
    counts: dict[str, int]
    other: int


def _ranked_codes(column: Categories) -> tuple[list[tuple[str | None, int]], int]:
    """``Counter(column).most_common()`` (ties in order of first appearance) and the
    count of missing values, from the codes with ``bincount``.

    >>> _ranked_codes(Categories(np.array([2, 0, -1, 0, 2, 1], dtype=np.int32), ("a", "b", "c")))
    ([('c', 2), ('a', 2), ('b', 1)], 1)
    """
    codes = column.codes
    present = codes[codes >= 0]
    counts = np.bincount(present, minlength=len(column.names))
    seen = np.flatnonzero(counts)
    first = np.full(len(column.names), codes.shape[0], dtype=np.int64)
    np.minimum.at(first, present, np.flatnonzero(codes >= 0))
    order = seen[np.lexsort((first[seen], -counts[seen]))]
    names = column.names
    return ([(names[c], n) for c, n in zip(order.tolist(), counts[order].tolist(), strict=True)],
            int(codes.shape[0] - present.shape[0]))


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

    def update(
        self, state: CategoricalState, values: Sequence[str | None] | Categories
    ) -> CategoricalState:
        if isinstance(values, Categories):
            ranked, missing = _ranked_codes(values)
        else:
            seen = Counter(values)
            missing = seen.pop(None, 0)
            ranked = seen.most_common()
        counts = dict(state["counts"])
        other = state["other"]
        # Most frequent first, so a burst of rare values cannot push out common ones.
        for category, n in ranked:
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
