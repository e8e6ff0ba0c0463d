"""A deterministic, mergeable quantile sketch: counts on logarithmic buckets.

The mapping is DDSketch's (Masson et al., VLDB 2019): bucket ``j`` holds
``gamma**j <= |x| < gamma**(j+1)`` with ``gamma = (1 + a) / (1 - a)``, so any
quantile is known to a relative accuracy ``a`` (1 % here); values with
``|x| < min_value`` share one zero bucket. driftline needs it for three
properties at once, which the alternatives lack:

* deterministic: the same input gives the same state, so a replay gives the
  same reports (Apache DataSketches' KLL compacts with an unseeded random bit);
* exactly mergeable (counts add);
* vectorised: a batch is mapped with numpy in one pass (the ``ddsketch``
  package adds values one by one in Python).

State is two parallel sorted lists ``{"keys": [...], "counts": [...]}``. Keys
sort like the values they hold: negative keys for negative values, 0 for the
zero bucket, positive keys for positive values. At most ``max_buckets`` keys
are kept (the lowest merge into their neighbour, as DDSketch collapses), which
bounds the state to about ``16 * max_buckets`` bytes; a feature spanning six
orders of magnitude needs about 700.

Bucket boundaries double as bin edges: edges placed on boundaries make the
counts of a later window (binned with ``searchsorted``) and the counts read
back from the sketch agree exactly, except for values within floating-point
rounding of a boundary.
"""

from __future__ import annotations

import math
from typing import TypedDict

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]


class LogHistogramState(TypedDict):
    keys: list[int]
    counts: list[int]


class LogHistogram:
    """Fold over :class:`LogHistogramState`.

    >>> h = LogHistogram()
    >>> st = h.update(h.initialize(), np.array([0.0, 1.0, 1.0, 10.0, -3.0]))
    >>> h.count(st), st["keys"] == sorted(st["keys"])
    (5, True)
    >>> edges = h.quantile_edges(st, 4)
    >>> h.bin_counts(st, edges).tolist() == np.bincount(
    ...     np.searchsorted(edges, [0.0, 1.0, 1.0, 10.0, -3.0], side="right"),
    ...     minlength=edges.size + 1).tolist()
    True
    """

    RELATIVE_ACCURACY = 0.01
    MIN_VALUE = 1e-9
    MAX_BUCKETS = 2048

    def __init__(
        self, *, relative_accuracy: float = RELATIVE_ACCURACY, min_value: float = MIN_VALUE,
        max_buckets: int = MAX_BUCKETS,
    ) -> None:
        if not 0 < relative_accuracy < 1:
            raise ValueError("relative_accuracy must be in (0, 1)")
        if not min_value > 0:
            raise ValueError("min_value must be positive")
        if max_buckets < 8:
            raise ValueError("max_buckets must be at least 8")
        self.relative_accuracy = relative_accuracy
        self.min_value = min_value
        self.max_buckets = max_buckets
        self._log_gamma = math.log((1 + relative_accuracy) / (1 - relative_accuracy))
        # keys start at 1 for the smallest non-zero magnitude
        self._offset = 1 - math.floor(math.log(min_value) / self._log_gamma)

    @staticmethod
    def initialize() -> LogHistogramState:
        return {"keys": [], "counts": []}

    def keys_of(self, values: Floats) -> npt.NDArray[np.int64]:
        mag = np.abs(values)
        keys = np.zeros(values.shape, dtype=np.int64)
        big = mag >= self.min_value
        j = np.floor(np.log(mag[big]) / self._log_gamma).astype(np.int64) + self._offset
        j = np.maximum(j, 1)  # rounding just below min_value stays out of the zero bucket
        keys[big] = np.where(values[big] < 0, -j, j)
        return keys

    def update(self, state: LogHistogramState, values: Floats) -> LogHistogramState:
        """Add finite values (the caller removes NaN)."""
        if values.size == 0:
            return state
        keys, counts = np.unique(self.keys_of(values), return_counts=True)
        return self._combine(state, keys, counts)

    def merge(self, a: LogHistogramState, b: LogHistogramState) -> LogHistogramState:
        return self._combine(a, np.asarray(b["keys"], dtype=np.int64),
                             np.asarray(b["counts"], dtype=np.int64))

    def _combine(
        self, state: LogHistogramState, keys: npt.NDArray[np.int64],
        counts: npt.NDArray[np.int64],
    ) -> LogHistogramState:
        all_keys = np.concatenate([np.asarray(state["keys"], dtype=np.int64), keys])
        all_counts = np.concatenate([np.asarray(state["counts"], dtype=np.int64), counts])
        uniq, inverse = np.unique(all_keys, return_inverse=True)
        summed = np.zeros(uniq.size, dtype=np.int64)
        np.add.at(summed, inverse, all_counts)
        excess = uniq.size - self.max_buckets
        if excess > 0:  # collapse the lowest buckets into the first one kept
            summed[excess] += summed[:excess].sum()
            uniq, summed = uniq[excess:], summed[excess:]
        return {"keys": uniq.tolist(), "counts": summed.tolist()}

    @staticmethod
    def count(state: LogHistogramState) -> int:
        return int(sum(state["counts"]))

    def bounds(self, key: int) -> tuple[float, float]:
        """``(lower, upper)`` value boundaries of a bucket."""
        if key == 0:
            return -self.min_value, self.min_value
        j = abs(key) - self._offset
        lo, hi = math.exp(j * self._log_gamma), math.exp((j + 1) * self._log_gamma)
        return (lo, hi) if key > 0 else (-hi, -lo)

    def quantile_edges(self, state: LogHistogramState, bins: int) -> Floats:
        """Bin edges at the quantiles ``i / bins``, on bucket boundaries.

        Each quantile contributes the upper boundary of its bucket. A bucket
        holding at least ``1 / bins`` of the values (an atom, such as the 0 of
        a mostly-zero feature or the 1 of a mostly-one flag) contributes its
        lower boundary too, so that it gets a bin of its own.
        """
        n = self.count(state)
        if n == 0:
            return np.empty(0)
        counts = np.asarray(state["counts"], dtype=np.int64)
        cum = np.cumsum(counts)
        edges: set[float] = set()
        for i in range(1, bins):
            b = int(np.searchsorted(cum, i / bins * n, side="right"))
            b = min(b, counts.size - 1)
            lo, hi = self.bounds(state["keys"][b])
            edges.add(hi)
            if counts[b] * bins >= n:
                edges.add(lo)
        return np.asarray(sorted(edges), dtype=np.float64)

    def bin_counts(self, state: LogHistogramState, edges: Floats) -> npt.NDArray[np.int64]:
        """Counts per bin of ``edges`` (``edges[i-1] <= x < edges[i]``), read from the buckets."""
        if not state["keys"]:
            return np.zeros(edges.size + 1, dtype=np.int64)
        mids = np.asarray([sum(self.bounds(k)) / 2 for k in state["keys"]], dtype=np.float64)
        idx = np.searchsorted(edges, mids, side="right")
        return np.bincount(idx, weights=np.asarray(state["counts"], dtype=np.float64),
                           minlength=edges.size + 1).round().astype(np.int64)

    def quantiles(self, state: LogHistogramState, ranks: Floats) -> Floats:
        """Approximate quantiles (relative accuracy ``relative_accuracy``)."""
        n = self.count(state)
        if n == 0:
            return np.empty(0)
        cum = np.cumsum(np.asarray(state["counts"], dtype=np.int64))
        out = []
        for r in np.asarray(ranks, dtype=np.float64):
            b = min(int(np.searchsorted(cum, r * n, side="right")), cum.size - 1)
            lo, hi = self.bounds(state["keys"][b])
            out.append(0.0 if state["keys"][b] == 0 else (lo + hi) / 2)
        return np.asarray(out, dtype=np.float64)
