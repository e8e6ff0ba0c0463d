"""Multivariate drift: PCA reconstruction error of the standardised features.

Per-feature metrics miss a change in how features move *together* (two features
whose correlation flips from +0.8 to -0.8 keep their marginals). A PCA fitted on
the reference learns the directions its data occupies; an event of a changed
joint distribution sticks out of them, so its *reconstruction error* (the
squared distance between the standardised event and its projection on the
components) grows; events that vary together more tightly than the reference's
(stronger correlations, less spread off the main directions) make it fall.
NannyML calls this data reconstruction drift (it frequency-encodes categorical
features, imputes, standardises, and keeps the components that explain 65 %).

Features: the first ``multivariate_max_features`` numeric ones by name and the
first ``MAX_CATEGORICAL`` categorical ones by name. A categorical feature is
*frequency-encoded*: an event's value is its category's frequency in the
reference (in half A, below); a category the reference did not count, or no
value, is 0. Categories with the same frequency read alike (a limit of the
encoding). The encoding is only known once the reference is complete, but it is
a linear map of indicator columns (``v = sum_c f_c 1[category = c]``), so the
warm-up counts indicators of each categorical feature's first ``SLOTS``
categories (in event order; the rest count as 0, as unseen ones do) among the
summed columns, and the encoded feature's moments follow exactly:
``E[v x_j] = sum_c f_c E[1_c x_j]`` and so on (``_mean_cov``). The indicators'
moments are counts and per-category sums of the numeric values (``_accumulate``:
``p`` additions per event and categorical feature, not ``p * SLOTS`` products).

Clipping (one event cannot dominate): each numeric value is clipped to
``limits``, its feature's anchor (the median of its first ``LIMITS_SAMPLE``
values, as ``streams.batch.anchor_of``) plus or minus ``CLIP_SDS`` = 8 robust sds
(1.4826 MAD of those values). The limits are fixed before the first event is
summed and the same function is applied to every event, in the warm-up's
moments and in every later window: the signal is the reconstruction error of
the *clipped* events, and everything below (held-out baseline, its expectation
equal to a later window's under no change) holds for it exactly as for any
fixed transformation of the features. What clipping buys: an event's error is
at most ``max_error(ref)``, the sum over features of (farthest limit minus mean,
in sds) squared (``||z - Pz||^2 <= ||z||^2``); in practice a value off in one
feature adds at most about ``(8 + 1)^2 = 81`` to one event's error, i.e. moves
a window's mean error by at most ``max_error / n``; Gaussian data is never
clipped (8 sds: probability about 1e-15). A window keeps how many of its events
had a value beyond the limits, and its farthest value (in reference sds, before
clipping) and that value's feature, for the report: "1 event 754 sd out in
AveOccup; not a shift of the distribution". A feature whose first values do
not vary has no limits (not clipped), as have references of earlier versions.

Reference, from mergeable moments of the ``d`` summed columns (``Halves``):

* events go alternately, by their position in the window (even, odd), to two
  halves A and B, each kept as count, sum and sum of outer products (upper
  triangle). Values are summed minus a per-feature ``shift`` (the monitor's
  anchor, a typical value), so a feature far from zero (epoch seconds, years)
  keeps its digits when the covariance is taken as a difference of moments;
* a missing numeric value is imputed with the running mean of the feature's
  values observed earlier in the same window (the shift before the first): an
  imputed value adds no deviation, so imputation cannot invent a
  correlation. Later windows impute the reference mean (0 once standardised):
  the same rule;
* means, standard deviations, components and the categorical frequencies come
  from half A only, and the baseline is A's model's mean error on half B,
  computed exactly from B's moments: ``E||Q z||^2 = tr(Q E[z z^T])`` with ``Q``
  the projector on what the components leave out. A held-out baseline: the
  in-sample error of a PCA is biased low (the components were fitted to those
  very events), which makes every later window look drifted. B and the later
  windows are both unseen by the fit, so under no change they have the same
  expected error.

Components: the fewest that explain ``variance`` (a share) of A's standardised
variance, and at most ``d - 1``, so something is always left to reconstruct.
Features constant in half A are left out (nothing to standardise by). A feature
whose direction the components explain can shift its mean without changing the
error: the reconstruction error judges how features vary together, PSI judges
each one's own distribution.

The test, two-sided: windows keep ``[n, sum, sum of squares]`` of their events'
errors (and the three numbers above). Under no change the window's mean error
``m`` has expectation ``b`` (the baseline) and, by the central limit theorem
(the errors are bounded, so it applies at window sizes), variance
``s^2 / n``; the baseline, itself a mean over B's ``n_B`` events, has variance
``s^2 / n_B`` (``s^2``: the window's own per-event variance, under no change
B's too; B's fourth moments are not kept). So ``z = (m - b) / (s sqrt(1/n +
1/n_B))`` is standard normal, and ``|z| > z_{alpha/2}`` flags with probability
``alpha`` (half of it above the baseline, half below), the window's share of
the policy's false-alarm rate. Without clipping, heavy tails break this: a rare
huge error dominates both ``m`` and ``s``, and most windows (those without one)
sit below the baseline. Measured on Student-t (3 degrees of freedom) features
and a categorical one, 400 windows of 1,000 events at alpha = 0.05: 19 flags
(0.0475; 9 above, 10 below); the unclipped one-sided test flagged none
(tests/streams/drift/test_multivariate_robust.py).

Batching never changes a result, to the last bit (for the same shift and
limits; the monitor's anchors and limits do not depend on batching either):
every sum over events is taken in event order (``cumsum``, or
``np.add.reduce`` across the rows of a table), an event's error comes from
matrix products of one fixed shape (``ERROR_BLOCK`` events), so BLAS sums its
products in the same order whatever the batch (a product's order can depend on
its shape: numpy hands one row to another BLAS routine), clipping and encoding
are per value, slots go to categories in event order, and the farthest value
is a maximum (ties to the lowest feature index). The project promises reports
that do not depend on how producers batch, and a float sum taken batch by batch
would break that promise in the last digits.

Sizes, for ``p`` numeric and ``q <= MAX_CATEGORICAL`` categorical features:
``Halves`` sum ``d = p + SLOTS q`` columns, ``2 + 5d + d(d+1)`` numbers (1,082
for d = 30, about 20 KB as JSON; d <= 62 at the defaults, 30 numeric and 4
categorical features: 4,218 numbers, about 80 KB; d <= 96 at the policy's
largest, 9,794); the fitted reference ``5e + ke + 4`` numbers for ``e = p + q``
features and ``k < e`` components, plus at most ``SLOTS`` categories and their
frequencies per categorical feature (at most 1,360 numbers for e = 34, about
27 KB as JSON); a window's ``ErrorSums`` six numbers.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NotRequired, TypedDict

import numpy as np
import numpy.typing as npt
from scipy.special import ndtri

from streams.batch import Categories

Floats = npt.NDArray[np.float64]

#: A variance below this share of the mean square about the shift counts as zero.
_CONSTANT = 1e-12


class Moments(TypedDict):
    """Count, sum and sum of outer products of some events, minus the shift."""

    n: int
    sum: list[float]  # d
    outer: list[float]  # upper triangle, row by row, d(d+1)/2


class Halves(TypedDict):
    """The warm-up's moments: halves A (even events) and B (odd), and what imputes."""

    shift: list[float]  # d, subtracted from every value before it is summed
    # d: [lo, hi] a value is clipped to before it is summed, None: not clipped.
    # Absent (halves of earlier versions): nothing is clipped.
    limits: NotRequired[list[list[float] | None]]
    # Categorical features whose SLOTS indicator columns (0 or 1) end the columns;
    # absent: 0.
    categorical: NotRequired[int]
    seen: list[int]  # d: values observed (not missing) so far in the window
    seen_sum: list[float]  # d: their sum, minus the shift
    a: Moments
    b: Moments


class PcaReference(TypedDict):
    """The fitted model and its held-out baseline; JSON-able, ``3d + kd + 4`` floats."""

    names: list[str]  # the features, in this order
    means: list[float]  # of half A
    sds: list[float]  # of half A, all positive
    components: list[list[float]]  # k orthonormal rows of d
    explained: float  # share of A's standardised variance the components explain
    baseline: float  # mean squared reconstruction error on half B
    n_fit: int  # events in A
    n_baseline: int  # events in B
    # Per name: the [lo, hi] its values are clipped to (None: not clipped). Absent
    # (references of earlier versions): nothing is clipped.
    limits: NotRequired[list[list[float] | None]]
    # Categorical names -> category -> its frequency in A, the value it is encoded
    # as (any other category, or none, is 0). Absent: numeric features only.
    categories: NotRequired[dict[str, dict[str, float]]]


#: ``[n, sum, sum of squares, beyond, farthest, where]`` of a window's events: the
#: count, sum and sum of squares of their (bounded) reconstruction errors; how many
#: had a value beyond the reference's limits; the largest distance of a value from
#: the reference mean in reference sds, and the index (in the reference's names) of
#: its feature (-1: none). States of earlier versions hold the first three only.
ErrorSums = list[float]


def choose_features(numeric: Sequence[str], max_features: int) -> list[str]:
    """The features the signal uses: the first ``max_features`` numeric ones by name.

    By name, not by arrival, so the choice does not depend on how producers
    order or batch their events.

    >>> choose_features(["b", "a", "c"], 2)
    ['a', 'b']
    """
    return sorted(numeric)[:max_features]


#: A numeric value is clipped this many robust sds (``limits_of``) from its anchor.
CLIP_SDS = 8.0
#: Categorical features in the signal (the first ones by name), and the categories
#: of each that the warm-up counts (the first seen, in event order).
MAX_CATEGORICAL = 4
SLOTS = 8
#: Values ``limits_of`` reads: the anchor's (``streams.batch.ANCHOR_SAMPLE``).
LIMITS_SAMPLE = 64


def limits_of(values: Floats) -> list[float] | None:
    """``[lo, hi]``: the median of the first ``LIMITS_SAMPLE`` finite values of a
    feature (its anchor's sample) plus or minus ``CLIP_SDS`` robust sds (1.4826 times
    their median absolute deviation; the mean absolute deviation times 1.2533 when
    that is 0). None when they do not vary: such a feature is not clipped.

    >>> [round(v, 4) for v in limits_of(np.array([1.0, 2.0, 3.0, np.nan]))]
    [-9.8608, 13.8608]
    >>> limits_of(np.array([5.0, 5.0])) is None
    True
    """
    finite = values[:LIMITS_SAMPLE][np.isfinite(values[:LIMITS_SAMPLE])]
    if finite.size < 2:
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        middle = float(np.median(finite))
        spread = 1.4826 * float(np.median(np.abs(finite - middle)))
        if not spread > 0:
            spread = 1.2533 * float(np.mean(np.abs(finite - middle)))
    lo, hi = middle - CLIP_SDS * spread, middle + CLIP_SDS * spread
    if not (spread > 0 and math.isfinite(lo) and math.isfinite(hi)):
        return None
    return [lo, hi]


def describe_features(ref: PcaReference) -> str:
    """The reference's features in words, e.g. "5 standardised features (3 numeric,
    2 categorical by frequency)".

    >>> describe_features({"names": ["a", "b"], "categories": {}})  # type: ignore[typeddict-item]
    '2 standardised numeric features'
    """
    categorical = len(ref.get("categories", {}))
    d = len(ref["names"])
    if not categorical:
        return f"{d} standardised numeric features"
    return (
        f"{d} standardised features ({d - categorical} numeric, {categorical} categorical "
        "encoded as their categories' reference frequencies)"
    )


def choose_categorical(categorical: Sequence[str]) -> list[str]:
    """The categorical features the signal uses: the first ``MAX_CATEGORICAL`` by name.

    >>> choose_categorical(["e", "d", "c", "b", "a"])
    ['a', 'b', 'c', 'd']
    """
    return sorted(categorical)[:MAX_CATEGORICAL]


def assign_slots(slots: Sequence[str], column: Sequence[str | None] | Categories) -> list[str]:
    """``slots`` with the categories of ``column`` not in them yet, in the order they
    first appear, until there are ``SLOTS``; None (no value) takes no slot.

    >>> assign_slots(["b"], ["a", None, "b", "c", "a"])
    ['b', 'a', 'c']
    """
    out = list(slots)
    if len(out) >= SLOTS:
        return out
    if isinstance(column, Categories):  # codes: the names in order of first appearance
        present = column.codes[column.codes >= 0]
        codes, first = np.unique(present, return_index=True)
        distinct: Iterable[str | None] = [column.names[c] for c in codes[np.argsort(first)]]
    else:
        distinct = dict.fromkeys(column)  # distinct, in order of first appearance
    seen = set(out)
    for value in distinct:
        if value is not None and value not in seen:
            out.append(value)
            seen.add(value)
            if len(out) >= SLOTS:
                break
    return out


def indicators(slots: Sequence[str], column: Sequence[str | None] | Categories) -> Floats:
    """``n x SLOTS``: 1 where the event's category is that slot's, else 0.

    >>> indicators(["a", "b"], ["b", None, "z"])[:, :3].tolist()
    [[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    """
    where: dict[str | None, int] = {c: i for i, c in enumerate(slots)}
    lookup = where.get
    if isinstance(column, Categories):  # through a table of the dictionary's names
        table = np.array([*(lookup(c, -1) for c in column.names), -1], dtype=np.int64)
        codes = table[column.codes]  # (code -1 reads the last)
    else:
        codes = np.array([lookup(c, -1) for c in column], dtype=np.int64)
    out = np.zeros((len(column), SLOTS))
    hit = codes >= 0
    out[np.flatnonzero(hit), codes[hit]] = 1.0
    return out


def encode(frequencies: dict[str, float], column: Sequence[str | None]) -> Floats:
    """A categorical column as its categories' reference frequencies (others: 0).

    >>> encode({"a": 0.75, "b": 0.25}, ["a", "b", "z", None]).tolist()
    [0.75, 0.25, 0.0, 0.0]
    """
    lookup = frequencies.get
    return np.array([lookup(c, 0.0) for c in column], dtype=np.float64)  # type: ignore[arg-type]


def _bounds(limits: Sequence[list[float] | None] | None, d: int) -> tuple[Floats, Floats]:
    lo = np.full(d, -np.inf)
    hi = np.full(d, np.inf)
    for i, lim in enumerate(limits or ()):
        if lim is not None:
            lo[i], hi[i] = lim
    return lo, hi


def matrix(columns: Sequence[Floats], n: int) -> Floats:
    """Columns as an ``n x d`` float matrix (NaN where missing)."""
    if not columns:
        return np.empty((n, 0), dtype=np.float64)
    return np.column_stack(columns).astype(np.float64, copy=False)


def empty_halves(
    shift: Sequence[float],
    limits: Sequence[list[float] | None] | None = None,
    *,
    categorical: int = 0,
) -> Halves:
    """Halves A and B of no events, summing values clipped to ``limits`` minus ``shift``;
    the last ``categorical * SLOTS`` columns are indicators (0 or 1)."""
    d = len(shift)

    def zero() -> Moments:
        return {"n": 0, "sum": [0.0] * d, "outer": [0.0] * (d * (d + 1) // 2)}

    halves: Halves = {
        "shift": [float(s) for s in shift],
        "seen": [0] * d,
        "seen_sum": [0.0] * d,
        "a": zero(),
        "b": zero(),
    }
    if limits is not None:
        halves["limits"] = [None if lim is None else [float(v) for v in lim] for lim in limits]
    if categorical:
        halves["categorical"] = categorical
    return halves


@functools.lru_cache(maxsize=64)
def _triangle(d: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    rows, cols = np.triu_indices(d)
    return rows, cols


def _square(packed: Sequence[float], d: int) -> Floats:
    m = np.zeros((d, d), dtype=np.float64)
    rows, cols = _triangle(d)
    m[rows, cols] = packed
    m[cols, rows] = packed
    return m


def _sum_in_order(start: float, values: Floats) -> float:
    """``start`` plus ``values``, added one after the other (the same for any batching)."""
    return float(np.cumsum(np.concatenate(([start], values)))[-1])


#: Events per table in ``_accumulate``: small enough for the CPU's cache.
ACCUMULATE_CHUNK = 256


def _accumulate_dense(m: Moments, xt: Floats) -> Moments:
    """``m`` plus the events that are the columns of ``xt`` (features x events): their
    values and the upper triangles of their outer products, added one event after
    the other.

    The events go, a chunk at a time, into the rows of a table whose first row is
    the sums so far; ``np.add.reduce`` along the table's rows (not its contiguous
    axis) adds them one after the other, as numpy adds along any axis but the
    fastest (``numpy.sum``: pairwise summation only along the fast axis in memory).
    """
    d, n = xt.shape
    if n == 0:
        return m
    cells = len(m["outer"])
    total = np.empty(d + cells)
    total[:d] = m["sum"]
    total[d:] = m["outer"]
    rows = min(n, ACCUMULATE_CHUNK)
    table = np.empty((rows + 1, d + cells))  # (at least 2 columns: never a vector)
    products = np.empty((cells, rows))
    # Values near the float limit overflow to inf: such a feature is left out when
    # the PCA is fitted (see ``fit``).
    with np.errstate(over="ignore", invalid="ignore"):
        for lo in range(0, n, ACCUMULATE_CHUNK):
            part = np.ascontiguousarray(xt[:, lo : lo + ACCUMULATE_CHUNK])
            k = part.shape[1]
            at = 0
            for i in range(d):  # row i of the triangle: x_i x_j for j >= i, all events
                np.multiply(part[i], part[i:], out=products[at : at + d - i, :k])
                at += d - i
            block = table[: k + 1]
            block[0] = total
            block[1:, :d] = part.T
            block[1:, d:] = products[:, :k].T
            total = np.add.reduce(block, axis=0)
    return {"n": m["n"] + n, "sum": total[:d].tolist(), "outer": total[d:].tolist()}


@functools.lru_cache(maxsize=64)
def _blocks(
    d: int, p: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Where, in the packed triangle of ``d`` columns, the cells numeric x numeric,
    numeric x indicator and indicator x indicator are (the first ``p`` numeric)."""
    rows, cols = _triangle(d)
    return (
        np.flatnonzero(cols < p),  # (then rows < p too), in the p-triangle's packed order
        np.flatnonzero((rows < p) & (cols >= p)),
        np.flatnonzero(rows >= p),
    )


def _accumulate(m: Moments, xt: Floats, categorical: int = 0) -> Moments:
    """``m`` plus the events that are the columns of ``xt`` (features x events), whose
    last ``categorical * SLOTS`` rows are indicators (exactly 0 or 1).

    Only the numeric columns need products: an indicator times a numeric value is
    that value for the events of the indicator's category, summed one event after
    the other as ``_accumulate_dense`` sums (a table reduced along its rows), and
    the indicators' sums and products are counts, exact in any order (integers
    below 2^53). Each event adds to one slot per categorical feature, so this
    costs ``p`` additions per event and feature instead of ``p * SLOTS`` products.
    """
    d, n = xt.shape
    if n == 0:
        return m
    if not categorical:
        return _accumulate_dense(m, xt)
    p = d - categorical * SLOTS
    dense_cells, mixed_cells, count_cells = _blocks(d, p)
    sums = np.asarray(m["sum"], dtype=np.float64)
    outer = np.asarray(m["outer"], dtype=np.float64)
    if p:
        dense = _accumulate_dense(
            {"n": m["n"], "sum": sums[:p].tolist(), "outer": outer[dense_cells].tolist()},
            xt[:p],
        )
        sums[:p] = dense["sum"]
        outer[dense_cells] = dense["outer"]
    ind = xt[p:]  # (categorical * SLOTS) x n
    # each event's slot per categorical feature (-1: none)
    codes = np.empty((categorical, n), dtype=np.int64)
    for t in range(categorical):
        block = ind[t * SLOTS : (t + 1) * SLOTS]
        codes[t] = np.where(block.any(axis=0), block.argmax(axis=0), -1)
    # indicator sums and products: counts and co-occurrence counts, exact (integers)
    co = np.zeros((categorical * SLOTS, categorical * SLOTS))
    for t in range(categorical):
        for u in range(t, categorical):
            both = (codes[t] >= 0) & (codes[u] >= 0)
            pairs = np.bincount(
                codes[t][both] * SLOTS + codes[u][both], minlength=SLOTS * SLOTS
            ).reshape(SLOTS, SLOTS)
            co[t * SLOTS : (t + 1) * SLOTS, u * SLOTS : (u + 1) * SLOTS] = pairs
    counts = np.diag(co).copy()
    sums[p:] += counts
    rows, cols = _triangle(d)
    outer[count_cells] += co[rows[count_cells] - p, cols[count_cells] - p]
    if p:
        # numeric x indicator: per slot, its events' numeric values in event order.
        mixed = outer[mixed_cells].reshape(p, categorical * SLOTS)  # row i: (i, p + c)
        width = max(p, 2)  # (at least 2 columns: never a vector)
        with np.errstate(over="ignore", invalid="ignore"):
            for c in np.flatnonzero(counts).tolist():
                events = np.flatnonzero(codes[c // SLOTS] == c % SLOTS)
                table = np.zeros((events.size + 1, width))
                table[0, :p] = mixed[:, c]
                table[1:, :p] = xt[:p, events].T
                mixed[:, c] = np.add.reduce(table, axis=0)[:p]
        outer[mixed_cells] = mixed.reshape(-1)
    return {"n": m["n"] + n, "sum": sums.tolist(), "outer": outer.tolist()}


def add_events(halves: Halves, x: Floats, *, offset: int) -> Halves:
    """Fold events (rows of ``x``, NaN where missing) into halves A and B.

    The event at position ``offset + i`` (its place among the window's events
    so far) goes to half A when that is even, to B when odd: the split depends
    on the order of events, not on how they were batched. A missing value
    becomes the mean of the feature's values observed before it in the window.
    ``x`` is read fastest as the transpose of a features x events array.

    >>> h = add_events(empty_halves([0.0, 0.0]),
    ...                np.array([[1.0, 2.0], [3.0, np.nan], [5.0, 6.0]]), offset=0)
    >>> h["a"]["n"], h["a"]["sum"], h["b"]["sum"], h["seen"]
    (2, [6.0, 8.0], [3.0, 2.0], [3, 2])
    """
    n, d = x.shape
    if n == 0:
        return halves
    q = halves.get("categorical", 0)
    p = d - q * SLOTS  # numeric columns; indicators (0 or 1, never missing) after them
    xt = x.T
    if "limits" in halves:  # (NaN stays NaN)
        lo, hi = _bounds(halves["limits"][:p], p)
        xt = np.clip(xt[:p], lo[:, np.newaxis], hi[:, np.newaxis])
    # features x events: each feature's values one after the other in memory
    xs = np.empty((d, n))
    np.subtract(xt[:p], np.asarray(halves["shift"][:p], dtype=np.float64)[:, None], out=xs[:p])
    xs[p:] = x.T[p:]
    num = xs[:p]
    seen = np.isfinite(num)
    values = np.where(seen, num, 0.0)
    # Per event, the count and sum of the values observed before it (exclusive),
    # summed one event after the other along each feature's row.
    counts = np.empty((p, n), dtype=np.int64)
    counts[:, 0] = halves["seen"][:p]
    counts[:, 1:] = seen[:, :-1]
    np.cumsum(counts, axis=1, out=counts)
    sums = np.empty((p, n))
    sums[:, 0] = halves["seen_sum"][:p]
    sums[:, 1:] = values[:, :-1]
    np.cumsum(sums, axis=1, out=sums)
    fill = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    xs[:p] = np.where(seen, num, fill)
    ones = xs[p:].sum(axis=1)  # (exact: counts)
    first = offset % 2  # 0: the batch's first event goes to A, 1: to B
    return {
        **halves,
        "seen": [*(counts[:, -1] + seen[:, -1]).tolist(), *(s + n for s in halves["seen"][p:])],
        "seen_sum": [
            *(sums[:, -1] + values[:, -1]).tolist(),
            *(np.asarray(halves["seen_sum"][p:], dtype=np.float64) + ones).tolist(),
        ],
        "a": _accumulate(halves["a"], xs[:, first::2], q),
        "b": _accumulate(halves["b"], xs[:, 1 - first :: 2], q),
    }


def merge_halves(a: Halves, b: Halves) -> Halves:
    """The halves of two sets of events (two warm-up windows) as one."""

    def add(x: Sequence[float], y: Sequence[float]) -> list[float]:
        out: list[float] = (np.asarray(x, dtype=np.float64) + np.asarray(y)).tolist()
        return out

    def moments(x: Moments, y: Moments) -> Moments:
        return {
            "n": x["n"] + y["n"],
            "sum": add(x["sum"], y["sum"]),
            "outer": add(x["outer"], y["outer"]),
        }

    return {
        **a,
        "seen": [p + q for p, q in zip(a["seen"], b["seen"], strict=True)],
        "seen_sum": add(a["seen_sum"], b["seen_sum"]),
        "a": moments(a["a"], b["a"]),
        "b": moments(a["b"], b["b"]),
    }


def _mean_cov(m: Moments, p: int, weights: Floats) -> tuple[Floats, Floats, Floats]:
    """Mean (minus the shift), covariance, and mean square about the shift of the
    ``p`` numeric columns and the categorical features ``weights @ u`` (``u``: the
    indicator columns after them; ``weights``: ``q x q * SLOTS``).

    A frequency encoding is a linear map of the indicators, so its moments follow
    from theirs exactly; taken block by block, so that a numeric moment that
    overflowed spoils its own feature only."""
    n = m["n"]
    d = len(m["sum"])
    q = weights.shape[0]
    mean_u = np.asarray(m["sum"], dtype=np.float64) / n
    s = _square(m["outer"], d) / n
    mean = np.concatenate([mean_u[:p], weights @ mean_u[p:]])
    square = np.empty((p + q, p + q))
    square[:p, :p] = s[:p, :p]
    square[:p, p:] = s[:p, p:] @ weights.T
    square[p:, :p] = square[:p, p:].T
    square[p:, p:] = weights @ s[p:, p:] @ weights.T
    return mean, square - np.outer(mean, mean), np.diag(square)


def _weights(p: int, q: int, frequency: Floats) -> Floats:
    """``q x q * SLOTS``: each categorical feature's slots weighted by their
    frequencies (in ``frequency``, after the ``p`` numeric columns)."""
    w = np.zeros((q, q * SLOTS))
    for j in range(q):
        cols = slice(j * SLOTS, (j + 1) * SLOTS)
        w[j, cols] = frequency[p + j * SLOTS : p + (j + 1) * SLOTS]
    return w


def fit(
    names: Sequence[str],
    halves: Halves,
    *,
    variance: float,
    categorical: Mapping[str, Sequence[str]] | None = None,
) -> PcaReference | None:
    """PCA on half A's standardised features, baseline error on half B.

    ``names``: the numeric columns of ``halves``; ``categorical``: the categorical
    features (name -> the categories of their ``SLOTS`` indicator columns, which
    follow the numeric ones), each encoded as its categories' frequencies in A.

    None when there is nothing joint to judge: fewer than two features that vary
    in A, fewer than two events in A or one in B, or B lying exactly in the
    components (a zero baseline, from which no relative change can be told).
    """
    cats = dict(categorical or {})
    a, b = halves["a"], halves["b"]
    if a["n"] < 2 or b["n"] < 1:
        return None
    p, q = len(names), len(cats)
    frequency = np.asarray(a["sum"], dtype=np.float64) / a["n"]  # (shift 0 for indicators)
    weights = _weights(p, q, frequency)
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite moments: left out
        mean_a, cov_a, square_a = _mean_cov(a, p, weights)
        mean_b, cov_b, _ = _mean_cov(b, p, weights)
    var = np.diag(cov_a)
    with np.errstate(invalid="ignore"):  # non-finite moments (overflow) are left out
        keep = np.isfinite(var) & np.isfinite(np.diag(cov_b)) & (var > _CONSTANT * square_a)
    if int(keep.sum()) < 2:
        return None
    idx = np.flatnonzero(keep)
    sd = np.sqrt(var[idx])
    scale = np.outer(sd, sd)
    values, vectors = np.linalg.eigh(cov_a[np.ix_(idx, idx)] / scale)
    order = np.argsort(values)[::-1]
    values, vectors = np.maximum(values[order], 0.0), vectors[:, order]
    d = idx.size
    share = np.cumsum(values) / values.sum()
    k = min(int(np.searchsorted(share, variance)) + 1, d - 1)
    components = vectors[:, :k].T
    # A component's sign is arbitrary; fix it (largest entry positive) so that
    # references built on different machines read alike. Errors do not depend on it.
    signs = np.sign(components[np.arange(k), np.argmax(np.abs(components), axis=1)])
    components = components * signs[:, None]
    delta = (mean_b[idx] - mean_a[idx]) / sd
    second = cov_b[np.ix_(idx, idx)] / scale + np.outer(delta, delta)  # E_B[z z^T]
    baseline = float(np.trace(second) - np.sum((components @ second) * components))
    if not baseline > _CONSTANT * float(np.trace(second)):
        return None
    shift = np.concatenate([np.asarray(halves["shift"][:p], dtype=np.float64), np.zeros(q)])
    limits: list[list[float] | None] = [*halves.get("limits", [None] * p)[:p], *[None] * q]
    all_names = [*names, *cats]
    kept = idx.tolist()
    ref: PcaReference = {
        "names": [all_names[i] for i in kept],
        "means": (shift[idx] + mean_a[idx]).tolist(),
        "sds": sd.tolist(),
        "components": components.tolist(),
        "explained": float(share[k - 1]),
        "baseline": baseline,
        "n_fit": a["n"],
        "n_baseline": b["n"],
        "categories": {
            name: {
                c: float(frequency[p + j * SLOTS + s])
                for s, c in enumerate(slots[:SLOTS])
                if frequency[p + j * SLOTS + s] > 0
            }
            for j, (name, slots) in enumerate(cats.items())
            if p + j in kept
        },
    }
    if "limits" in halves:  # (halves of earlier versions: nothing was clipped)
        ref["limits"] = [limits[i] for i in kept]
    return ref


#: Events per matrix product in ``errors``: every product has this one shape.
ERROR_BLOCK = 512


@dataclass(frozen=True)
class Measured:
    """Per event: the squared reconstruction error of its clipped values, whether any
    of its values lay beyond the reference's limits and, for such an event, how far
    its farthest value is from the reference mean (in reference sds, before
    clipping) and that value's feature (index in the reference's names; 0 and -1
    for the other events)."""

    errors: Floats
    farthest: Floats
    where: npt.NDArray[np.int64]
    beyond: npt.NDArray[np.bool_]


def measure(ref: PcaReference, x: Floats) -> Measured:
    """The events (rows of ``x``, columns in ``ref["names"]`` order, categorical
    ones encoded; NaN where missing, which counts as the reference mean) measured
    against the reference.

    Values are clipped to the reference's ``limits`` first (as its moments were),
    so an event's error is at most ``max_error(ref)``. ``||z||^2 - ||P z||^2`` for
    orthonormal components ``P``. ``P z`` of the whole batch is a matrix product,
    taken in blocks of ``ERROR_BLOCK`` events (the last one padded with zeros) so
    that every product has the same shape: BLAS sums each event's products along
    the features in the same order whatever the batch, and an event's error does
    not depend on the other events of its batch. The squares are summed feature by
    feature. ``x`` is read fastest as the transpose of a features x events array.
    """
    n = x.shape[0]
    d = len(ref["names"])
    width = -(-n // ERROR_BLOCK) * ERROR_BLOCK
    means = np.asarray(ref["means"], dtype=np.float64)
    sds = np.asarray(ref["sds"], dtype=np.float64)
    z = np.zeros((d, width))  # features x events, padded with events of error 0
    body = z[:, :n]
    with np.errstate(invalid="ignore", over="ignore"):
        np.subtract(x.T, means[:, None], out=body)
        body /= sds[:, None]
    body[~np.isfinite(body)] = 0.0  # missing: the reference mean (and never beyond)
    beyond: npt.NDArray[np.bool_] = np.zeros(n, dtype=np.bool_)
    farthest = np.zeros(n)
    where = np.full(n, -1, dtype=np.int64)
    if "limits" in ref and n:
        # The limits in sds from the mean: clipping a standardised value there is
        # clipping the value to the limits (sds are positive).
        lo, hi = _bounds(ref["limits"], d)
        lo_z, hi_z = (lo - means) / sds, (hi - means) / sds
        out_cells = (body < lo_z[:, None]) | (body > hi_z[:, None])
        beyond = np.asarray(out_cells.any(axis=0), dtype=np.bool_)
        hit = np.flatnonzero(beyond)
        if hit.size:  # rare: how far, and where, for the events beyond only
            far = np.abs(body[:, hit])
            at = np.argmax(far, axis=0)
            farthest[hit], where[hit] = far[at, np.arange(hit.size)], at
            np.clip(body, lo_z[:, None], hi_z[:, None], out=body)
    components = np.asarray(ref["components"], dtype=np.float64).reshape(-1, d)
    projected = np.empty((components.shape[0], width))
    for start in range(0, width, ERROR_BLOCK):
        block = slice(start, start + ERROR_BLOCK)
        np.matmul(components, z[:, block], out=projected[:, block])
    # (rows summed one after the other: at least ERROR_BLOCK columns, never a vector)
    square = np.add.reduce(np.square(z), axis=0)
    square -= np.add.reduce(np.square(projected), axis=0)
    return Measured(
        errors=np.maximum(square[:n], 0.0), farthest=farthest, where=where, beyond=beyond
    )


def errors(ref: PcaReference, x: Floats) -> Floats:
    """Per-event squared reconstruction errors of the rows of ``x`` (see ``measure``)."""
    return measure(ref, x).errors


def max_error(ref: PcaReference) -> float | None:
    """The largest error one event can have: every clipped value at its farthest
    limit (``||z - P z||^2 <= ||z||^2``). None when some feature is not clipped
    (references of earlier versions, features whose anchor sample did not vary);
    a categorical feature's encoded value lies in [0, 1].
    """
    limits = ref.get("limits")
    if limits is None:
        return None
    names = ref["names"]
    categories = ref.get("categories", {})
    total = 0.0
    for name, mean, sd, lim in zip(names, ref["means"], ref["sds"], limits, strict=True):
        if name in categories:
            lim = [0.0, 1.0]
        if lim is None:
            return None
        total += (max(abs(lim[0] - mean), abs(lim[1] - mean)) / sd) ** 2
    return total


#: ``ErrorSums`` of no events.
NO_EVENTS: ErrorSums = [0.0, 0.0, 0.0, 0.0, 0.0, -1.0]


def _full(sums: Sequence[float]) -> list[float]:
    """Sums of earlier versions (``[n, sum, sum of squares]``) in the current layout."""
    return [*sums, *NO_EVENTS[len(sums) :]]


def _farther(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """``[farthest, where]`` of the two: the larger distance, the lower index on a tie
    (whichever order the two come in)."""
    (fa, wa), (fb, wb) = a, b
    if wb >= 0 and (wa < 0 or fb > fa or (fb == fa and wb < wa)):
        return [float(fb), float(wb)]
    return [float(fa), float(wa)]


def add_errors(sums: ErrorSums | None, err: Floats | Measured) -> ErrorSums:
    """``ErrorSums`` with the events' errors added, in event order.

    >>> add_errors(add_errors(None, np.array([1.0, 2.0])), np.array([3.0]))
    [3.0, 6.0, 14.0, 0.0, 0.0, -1.0]
    """
    n, total, squares, beyond, far, where = _full(sums if sums is not None else NO_EVENTS)
    if isinstance(err, Measured):
        values = err.errors
        count = int(err.beyond.sum())
        if count:
            beyond += count
            # the farthest value, the lowest feature index among the farthest
            top = float(err.farthest[err.beyond].max())
            at = float(err.where[err.beyond & (err.farthest == top)].min())
            far, where = _farther([far, where], [top, at])
    else:
        values = err
    return [
        n + values.size,
        _sum_in_order(total, values),
        _sum_in_order(squares, values * values),
        beyond,
        far,
        where,
    ]


def sum_errors(parts: Sequence[ErrorSums]) -> ErrorSums:
    """The sums of the union of the parts' events (e.g. the panes of a window).

    >>> sum_errors([[2.0, 3.0, 5.0, 1.0, 9.5, 2.0], [1.0, 3.0, 9.0]])
    [3.0, 6.0, 14.0, 1.0, 9.5, 2.0]
    """
    out = list(NO_EVENTS)
    for part in map(_full, parts):
        out[:4] = [float(x + y) for x, y in zip(out[:4], part[:4], strict=True)]
        out[4:] = _farther(out[4:], part[4:])
    return out


@dataclass(frozen=True)
class ErrorTest:
    """A window's mean error against the baseline; no judgement."""

    n: int
    error: float  # the window's mean squared reconstruction error
    baseline: float
    relative_change: float  # error / baseline - 1
    z: float | None  # None when the window's errors do not vary
    noise: float | None  # the mean error noise alone exceeds with probability alpha / 2
    noise_low: float | None  # ... and falls below with probability alpha / 2
    beyond: int  # events with a value beyond the reference's limits
    farthest: float  # the farthest value's distance from the reference mean, in sds
    where: int  # its feature's index in the reference's names; -1: none

    def beats_noise(self) -> bool:
        if self.noise is None or self.noise_low is None:
            return self.error != self.baseline
        return self.error > self.noise or self.error < self.noise_low


def compare_errors(ref: PcaReference, sums: ErrorSums, *, alpha: float) -> ErrorTest:
    """Two-sided z-test of a window's mean error against the held-out baseline.

    >>> ref = {"baseline": 1.0, "n_baseline": 400}
    >>> t = compare_errors(ref, [400.0, 480.0, 800.0], alpha=1e-3)  # type: ignore[arg-type]
    >>> round(t.relative_change, 3), round(t.z or 0, 2), t.beats_noise()
    (0.2, 3.77, True)
    >>> t = compare_errors(ref, [400.0, 320.0, 480.0], alpha=1e-3)  # type: ignore[arg-type]
    >>> round(t.relative_change, 3), round(t.z or 0, 2), t.beats_noise()
    (-0.2, -3.77, True)
    """
    n, total, squares, beyond, far, where = _full(sums)
    mean = total / n
    var = max(squares - total * mean, 0.0) / (n - 1) if n > 1 else 0.0
    se = math.sqrt(var * (1.0 / n + 1.0 / ref["n_baseline"]))
    base = ref["baseline"]
    z = (mean - base) / se if se > 0 else None
    half = _norm_isf(alpha / 2) * se
    return ErrorTest(
        n=int(n),
        error=mean,
        baseline=base,
        relative_change=mean / base - 1.0,
        z=z,
        noise=base + half if se > 0 else None,
        noise_low=base - half if se > 0 else None,
        beyond=int(beyond),
        farthest=far,
        where=int(where),
    )


@functools.lru_cache(maxsize=256)
def _norm_isf(alpha: float) -> float:
    return float(-ndtri(alpha))  # the normal's upper alpha quantile
