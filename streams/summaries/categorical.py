"""Categorical feature summary: counts of a bounded set of categories plus "other".

State (a plain dict)::

    {"missing": int, "counts": {category: int}, "other": int}

At most ``max_categories`` distinct categories are counted per window; values
beyond that go to ``other``, so state never grows with traffic (about 40 bytes
per tracked category). Which new categories claim the last free places is
decided per batch (the most frequent in it first), so beyond ``max_categories``
the counts depend on how the events were batched; below it they do not, and
``counts`` is kept sorted by name, so neither do the state's bytes.
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


def _code_counts(column: Categories) -> tuple[npt.NDArray[np.int64], int]:
    """Count of each code (index: code) and of missing values, with one ``bincount``.

    >>> _code_counts(Categories(np.array([2, 0, -1, 0, 2], dtype=np.int32), ("a", "b", "c")))
    (array([2, 0, 2]), 1)
    """
    counts = np.bincount(column.codes + 1, minlength=len(column.names) + 1)  # 0: missing
    return counts[1:], int(counts[0])


def _ranked_codes(
    column: Categories, codes: npt.NDArray[np.intp], counts: npt.NDArray[np.int64]
) -> list[tuple[str, int]]:
    """``(name, count)`` of ``codes`` as ``Counter(column).most_common()`` ranks them:
    by count, ties in order of first appearance.

    >>> c = Categories(np.array([2, 0, -1, 0, 2, 1], dtype=np.int32), ("a", "b", "c"))
    >>> _ranked_codes(c, np.array([0, 1, 2]), _code_counts(c)[0])
    [('c', 2), ('a', 2), ('b', 1)]
    """
    if codes.size > 1:
        if codes.size <= 8:  # a pass over the column per code
            first = np.array([int(np.argmax(column.codes == c)) for c in codes.tolist()])
        else:  # a stable sort of the column: each code's first place
            seen, where = np.unique(column.codes, return_index=True)
            first = where[np.searchsorted(seen, codes)]
        codes = codes[np.lexsort((first, -counts[codes]))]
    names = column.names
    return [(names[c], n) for c, n in zip(codes.tolist(), counts[codes].tolist(), strict=True)]


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
        counts = dict(state["counts"])
        other = state["other"]
        ranked: list[tuple[str, int]] | list[tuple[str | None, int]]
        if isinstance(values, Categories):
            code_counts, missing = _code_counts(values)
            seen = np.flatnonzero(code_counts)
            names = values.names
            known = np.array([names[c] in counts for c in seen.tolist()], dtype=bool)
            # categories counted before are added whatever their rank: only the new
            # ones need ranking (the order in which they claim the free places)
            for code, n in zip(
                seen[known].tolist(), code_counts[seen[known]].tolist(), strict=True
            ):
                counts[names[code]] += n
            ranked = _ranked_codes(values, seen[~known], code_counts)
        else:
            tally = Counter(values)
            missing = tally.pop(None, 0)
            ranked = tally.most_common()
        # Most frequent first, so a burst of rare values cannot push out common ones.
        for category, n in ranked:
            assert category is not None
            if category in counts:
                counts[category] += n
            elif len(counts) < self.max_categories:
                counts[category] = n
            else:
                other += n
        if len(counts) > len(state["counts"]):  # kept by name: the same however batched
            counts = dict(sorted(counts.items()))
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
