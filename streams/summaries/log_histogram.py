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

import functools
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

    def keys_of(self, values: Floats, anchor: float | Floats = 0.0) -> npt.NDArray[np.int64]:
        """The bucket of each value, in one pass over an array of any shape; ``anchor``
        is broadcast against ``values`` (one per row: ``anchors[:, np.newaxis]``). A NaN
        gets no meaningful key (callers count finite values only).

        >>> LogHistogram().keys_of(np.array([[1.0, 0.0], [5.0, 1.0]]),
        ...                        np.array([[0.0], [5.0]])).tolist()
        [[1038, 0], [0, -1107]]
        """
        d = values - anchor
        # Computed in floats (exact: keys are integers far below 2**53) for every lane;
        # a lane's key is its "up" one above the zero bucket, its "down" one below it.
        # (Masks multiply: np.where branches on every lane, several times slower.)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            logs = np.log(np.abs(d))
            logs /= self._log_gamma
            up = np.floor(logs)  # d in [g**j, g**(j+1)): floor
            up -= self._j0 - 1
            np.maximum(up, 1.0, out=up)  # (1 too where d is 0: log -inf)
            down = np.ceil(logs)  # |d| in (g**j, g**(j+1)]: ceil - 1
            down -= self._j0
            np.maximum(down, 1.0, out=down)
            up *= d >= self._zero
            down *= d < -self._zero
            up -= down
            infinite = np.isinf(logs)
            if infinite.any():  # a distance too large for a float: bucket 1 (-1 below)
                up[infinite] = np.sign(d[infinite])
            out: npt.NDArray[np.int64] = up.astype(np.int64)
        return out

    def update(self, state: LogHistogramState, values: Floats) -> LogHistogramState:
        """Add finite values (the caller removes NaN)."""
        if values.size == 0:
            return state
        return self.add_keys(state, self.keys_of(values, state["anchor"]))

    def add_keys(self, state: LogHistogramState, keys: npt.NDArray[np.int64]) -> LogHistogramState:
        """Add values given by their keys (``keys_of``, with the state's anchor)."""
        if keys.size == 0:
            return state
        low = int(keys.min())
        span = int(keys.max()) - low + 1
        if span <= 4 * keys.size + 4096:  # count with bincount: no sort
            counts = np.bincount(keys - low, minlength=span)
            present = np.flatnonzero(counts)
            return self._combine(state, present + low, counts[present])
        uniq, counts = np.unique(keys, return_counts=True)
        return self._combine(state, uniq, counts)

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
        """``state`` plus ``counts`` in the buckets ``keys`` (sorted, distinct)."""
        old_keys = np.asarray(state["keys"], dtype=np.int64)
        old_counts = np.asarray(state["counts"], dtype=np.int64)
        at = np.searchsorted(old_keys, keys)
        new = old_keys[np.minimum(at, old_keys.size - 1)] != keys if old_keys.size else None
        if new is not None and not new.any():
            # every bucket exists already (the usual case once a sketch has filled)
            summed = old_counts.copy()
            summed[at] += counts
            return {"anchor": state["anchor"], "keys": state["keys"], "counts": summed.tolist()}
        # the new buckets go in at their places (both sides sorted: no sort needed)
        fresh = keys if new is None else keys[new]
        places = at if new is None else at[new]
        uniq = np.insert(old_keys, places, fresh)
        summed = np.insert(old_counts, places, 0)
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
        ranks = np.arange(1, bins) / bins * n
        b = np.minimum(np.searchsorted(cum, ranks, side="right"), counts.size - 1)
        lo, hi = self._bounds(np.asarray(state["keys"], dtype=np.int64)[b], state["anchor"])
        atom = counts[b] * bins >= n
        edges: Floats = np.unique(np.concatenate((hi, lo[atom])))
        return edges

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
        targets = np.asarray(ranks, dtype=np.float64) * n
        b = np.minimum(np.searchsorted(cum, targets, side="right"), cum.size - 1)
        return self._estimates(np.asarray(state["keys"], dtype=np.int64)[b], state["anchor"])

    def mean_std(self, state: LogHistogramState) -> tuple[float, float]:
        """Mean and standard deviation, each value read as its bucket's estimate."""
        if not state["keys"]:
            return 0.0, 0.0
        values = self._estimates(np.asarray(state["keys"], dtype=np.int64), state["anchor"])
        weights = np.asarray(state["counts"], dtype=np.float64)
        mean = float(np.average(values, weights=weights))
        var = float(np.average((values - mean) ** 2, weights=weights))
        return mean, math.sqrt(var)

    def _estimate(self, key: int, anchor: float) -> float:
        """DDSketch's estimate ``2 lo hi / (lo + hi)``: within ``a`` of any value in the bucket."""
        return float(self._estimates(np.array([key], dtype=np.int64), anchor)[0])

    def _estimates(self, keys: npt.NDArray[np.int64], anchor: float) -> Floats:
        """``_estimate`` of each key, with the same float operations (bit for bit)."""
        j = self._j0 + np.abs(keys) - 1
        lo, hi = self._powers(j), self._powers(j + 1)
        with np.errstate(over="ignore", invalid="ignore"):  # as Python floats do
            mag = 2 * lo * (hi / (lo + hi))
            value = np.clip(anchor + np.where(keys > 0, mag, -mag), -_FLOAT_MAX, _FLOAT_MAX)
        out: Floats = np.where(keys == 0, anchor, value)
        return out

    def _bounds(self, keys: npt.NDArray[np.int64], anchor: float) -> tuple[Floats, Floats]:
        """``bounds`` of each key, with the same float operations (bit for bit)."""
        j = self._j0 + np.abs(keys) - 1
        low, high = self._powers(j), self._powers(j + 1)
        lo = np.where(keys == 0, -self._zero, np.where(keys < 0, -high, low))
        hi = np.where(keys == 0, self._zero, np.where(keys < 0, -low, high))
        with np.errstate(over="ignore"):
            return (
                np.clip(anchor + lo, -_FLOAT_MAX, _FLOAT_MAX),
                np.clip(anchor + hi, -_FLOAT_MAX, _FLOAT_MAX),
            )

    def _powers(self, j: npt.NDArray[np.int64]) -> Floats:
        """``_power`` of each ``j`` (at least ``_j0 - 1``), read from a table."""
        table = _power_table(self._log_gamma, self._j0)
        out: Floats = table[np.clip(j - self._j0, 0, table.size - 1)]
        return out

    def _insides(self, keys: npt.NDArray[np.int64], anchor: float) -> Floats:
        """A value strictly inside each bucket (its centre), for placing its count in a bin."""
        j = (self._j0 + np.abs(keys) - 1).astype(np.float64)
        with np.errstate(over="ignore"):
            lo = np.minimum(np.exp(j * self._log_gamma), _FLOAT_MAX)
            hi = np.minimum(np.exp((j + 1) * self._log_gamma), _FLOAT_MAX)
        mid = lo / 2 + hi / 2
        out = np.clip(anchor + np.where(keys > 0, mid, -mid), -_FLOAT_MAX, _FLOAT_MAX)
        return np.where(keys == 0, anchor, out)


@functools.lru_cache(maxsize=8)
def _power_table(log_gamma: float, j0: int) -> Floats:
    """``exp(j * log_gamma)`` for ``j = j0, j0 + 1, ...`` as ``LogHistogram._power``
    computes it (``math.exp``: numpy's exp may differ in the last bit), up to the
    first ``j`` that overflows (``_FLOAT_MAX`` from there on): every bucket boundary,
    about 37,000 floats for 1 % accuracy, computed once."""
    out = []
    j = j0
    while True:
        try:
            out.append(math.exp(j * log_gamma))
        except OverflowError:
            out.append(_FLOAT_MAX)
            break
        j += 1
    table = np.array(out)
    table.flags.writeable = False
    return table


def _clip(value: float) -> float:
    """Keep boundaries finite (JSON has no infinity)."""
    return min(max(value, -_FLOAT_MAX), _FLOAT_MAX)
