"""A deterministic, mergeable quantile sketch: counts on logarithmic buckets.

The mapping is DDSketch's (Masson et al., VLDB 2019), applied to the distance
from an *anchor* (a typical value of the feature, fixed when the feature is
first seen): bucket ``j`` holds ``gamma**j <= |x - anchor| < gamma**(j+1)``
with ``gamma = (1 + a) / (1 - a)``, so any quantile is known to a relative
accuracy ``a`` (1 %) of its distance from the anchor. Values within
``min_value`` of the anchor share one zero bucket. The anchor keeps features
with a large offset and a small spread (a year, a temperature in kelvin) from
collapsing into one bucket. driftline needs three properties at once, which the
alternatives lack:

* deterministic: the same input gives the same state, so a replay gives the
  same reports (Apache DataSketches' KLL compacts with an unseeded random bit);
* exactly mergeable (counts add; sketches to merge share their anchor);
* vectorised: a batch is mapped with numpy in one pass (the ``ddsketch``
  package adds values one by one in Python).

State is ``{"anchor": float, "keys": [...], "counts": [...]}`` with sorted
keys. Keys sort like the values they hold: negative keys below the anchor, 0
for the zero bucket, positive keys above. Every bucket is closed below and open
above, like ``numpy.searchsorted(edges, x, side="right")`` bins. At most
``max_buckets`` keys are kept (the lowest merge into their neighbour, as
DDSketch collapses), which bounds the state to about ``16 * max_buckets`` bytes;
a feature spanning six orders of magnitude needs about 700.

Bucket boundaries double as bin edges: edges placed on boundaries make the
counts of a later window (binned with ``searchsorted``) and the counts read
back from the sketch agree exactly, except for values within floating-point
rounding of a boundary.
"""

from __future__ import annotations

import math
import sys
from typing import TypedDict

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]


class LogHistogramState(TypedDict):
    anchor: float
    keys: list[int]
    counts: list[int]


_FLOAT_MAX = sys.float_info.max


class LogHistogram:
    """Fold over :class:`LogHistogramState`.

    >>> h = LogHistogram()
    >>> st = h.update(h.initialize(anchor=1.0), np.array([0.0, 1.0, 1.0, 10.0, -3.0]))
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
        self,
        *,
        relative_accuracy: float = RELATIVE_ACCURACY,
        min_value: float = MIN_VALUE,
        max_buckets: int = MAX_BUCKETS,
    ) -> None:
        if not 0 < relative_accuracy < 1:
            raise ValueError("relative_accuracy must be in (0, 1)")
        if not (min_value > 0 and math.isfinite(min_value)):
            raise ValueError("min_value must be positive and finite")
        if max_buckets < 8:
            raise ValueError("max_buckets must be at least 8")
        self.relative_accuracy = relative_accuracy
        self.min_value = min_value
        self.max_buckets = max_buckets
        self._log_gamma = math.log((1 + relative_accuracy) / (1 - relative_accuracy))
        # The zero bucket is [-g**J, g**J) with g**J <= min_value; key k > 0 is
        # j = J + k - 1, so the first bucket above zero starts exactly at g**J.
        self._j0 = math.floor(math.log(min_value) / self._log_gamma)
        self._zero = self._power(self._j0)

    def _power(self, j: int) -> float:
        try:
            return math.exp(j * self._log_gamma)
        except OverflowError:
            return _FLOAT_MAX

    @staticmethod
    def initialize(anchor: float = 0.0) -> LogHistogramState:
        if not math.isfinite(anchor):
            raise ValueError("anchor must be finite")
        return {"anchor": float(anchor), "keys": [], "counts": []}

    def keys_of(self, values: Floats, anchor: float = 0.0) -> npt.NDArray[np.int64]:
        d = values - anchor
        keys = np.zeros(values.shape, dtype=np.int64)
        with np.errstate(divide="ignore", over="ignore"):
            logs = np.log(np.abs(d)) / self._log_gamma
        up = d >= self._zero  # d in [g**j, g**(j+1)): floor
        keys[up] = np.maximum(np.floor(logs[up]).astype(np.int64) - self._j0 + 1, 1)
        down = d < -self._zero  # d in [-g**(j+1), -g**j), |d| in (g**j, g**(j+1)]: ceil - 1
        j_down = np.ceil(logs[down]).astype(np.int64) - 1
        keys[down] = -np.maximum(j_down - self._j0 + 1, 1)
        return keys

    def update(self, state: LogHistogramState, values: Floats) -> LogHistogramState:
        """Add finite values (the caller removes NaN)."""
        if values.size == 0:
            return state
        keys, counts = np.unique(self.keys_of(values, state["anchor"]), return_counts=True)
        return self._combine(state, keys, counts)

    def merge(self, a: LogHistogramState, b: LogHistogramState) -> LogHistogramState:
        if a["anchor"] != b["anchor"]:
            raise ValueError(f"sketches differ in anchor ({a['anchor']} vs {b['anchor']})")
        return self._combine(
            a, np.asarray(b["keys"], dtype=np.int64), np.asarray(b["counts"], dtype=np.int64)
        )

    def _combine(
        self,
        state: LogHistogramState,
        keys: npt.NDArray[np.int64],
        counts: npt.NDArray[np.int64],
    ) -> LogHistogramState:
        old_keys = np.asarray(state["keys"], dtype=np.int64)
        uniq = np.union1d(old_keys, keys)
        summed = np.zeros(uniq.size, dtype=np.int64)
        # each side's keys are distinct, so each side adds at distinct positions
        summed[np.searchsorted(uniq, old_keys)] += np.asarray(state["counts"], dtype=np.int64)
        summed[np.searchsorted(uniq, keys)] += counts
        excess = uniq.size - self.max_buckets
        if excess > 0:  # collapse the lowest buckets into the first one kept
            summed[excess] += summed[:excess].sum()
            uniq, summed = uniq[excess:], summed[excess:]
        return {"anchor": state["anchor"], "keys": uniq.tolist(), "counts": summed.tolist()}

    @staticmethod
    def count(state: LogHistogramState) -> int:
        return int(sum(state["counts"]))

    def bounds(self, key: int, anchor: float = 0.0) -> tuple[float, float]:
        """``(lower, upper)`` value boundaries of a bucket: ``lower <= x < upper``."""
        if key == 0:
            lo, hi = -self._zero, self._zero
        else:
            j = self._j0 + abs(key) - 1
            lo, hi = self._power(j), self._power(j + 1)
            if key < 0:
                lo, hi = -hi, -lo
        return (_clip(anchor + lo), _clip(anchor + hi))

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
            lo, hi = self.bounds(state["keys"][b], state["anchor"])
            edges.add(hi)
            if counts[b] * bins >= n:
                edges.add(lo)
        return np.asarray(sorted(edges), dtype=np.float64)

    def bin_counts(self, state: LogHistogramState, edges: Floats) -> npt.NDArray[np.int64]:
        """Counts per bin of ``edges`` (``edges[i-1] <= x < edges[i]``), read from the buckets."""
        if not state["keys"]:
            return np.zeros(edges.size + 1, dtype=np.int64)
        mids = self._insides(np.asarray(state["keys"], dtype=np.int64), state["anchor"])
        idx = np.searchsorted(edges, mids, side="right")
        return (
            np.bincount(
                idx, weights=np.asarray(state["counts"], dtype=np.float64), minlength=edges.size + 1
            )
            .round()
            .astype(np.int64)
        )

    def quantiles(self, state: LogHistogramState, ranks: Floats) -> Floats:
        """Approximate quantiles (relative accuracy ``relative_accuracy``)."""
        n = self.count(state)
        if n == 0:
            return np.empty(0)
        cum = np.cumsum(np.asarray(state["counts"], dtype=np.int64))
        out = []
        for r in np.asarray(ranks, dtype=np.float64):
            b = min(int(np.searchsorted(cum, r * n, side="right")), cum.size - 1)
            out.append(self._estimate(state["keys"][b], state["anchor"]))
        return np.asarray(out, dtype=np.float64)

    def mean_std(self, state: LogHistogramState) -> tuple[float, float]:
        """Mean and standard deviation, each value read as its bucket's estimate."""
        if not state["keys"]:
            return 0.0, 0.0
        values = np.asarray([self._estimate(k, state["anchor"]) for k in state["keys"]])
        weights = np.asarray(state["counts"], dtype=np.float64)
        mean = float(np.average(values, weights=weights))
        var = float(np.average((values - mean) ** 2, weights=weights))
        return mean, math.sqrt(var)

    def _estimate(self, key: int, anchor: float) -> float:
        """DDSketch's estimate ``2 lo hi / (lo + hi)``: within ``a`` of any value in the bucket."""
        if key == 0:
            return anchor
        j = self._j0 + abs(key) - 1
        lo, hi = self._power(j), self._power(j + 1)
        mag = 2 * lo * (hi / (lo + hi))
        return _clip(anchor + (mag if key > 0 else -mag))

    def _insides(self, keys: npt.NDArray[np.int64], anchor: float) -> Floats:
        """A value strictly inside each bucket (its centre), for placing its count in a bin."""
        j = (self._j0 + np.abs(keys) - 1).astype(np.float64)
        with np.errstate(over="ignore"):
            lo = np.minimum(np.exp(j * self._log_gamma), _FLOAT_MAX)
            hi = np.minimum(np.exp((j + 1) * self._log_gamma), _FLOAT_MAX)
        mid = lo / 2 + hi / 2
        out = np.clip(anchor + np.where(keys > 0, mid, -mid), -_FLOAT_MAX, _FLOAT_MAX)
        return np.where(keys == 0, anchor, out)


def _clip(value: float) -> float:
    """Keep boundaries finite (JSON has no infinity)."""
    return min(max(value, -_FLOAT_MAX), _FLOAT_MAX)
