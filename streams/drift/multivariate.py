"""Multivariate drift: PCA reconstruction error of the standardised numeric features.

Per-feature metrics miss a change in how features move *together* (two features
whose correlation flips from +0.8 to -0.8 keep their marginals). A PCA fitted on
the reference learns the directions its data occupies; an event of a changed
joint distribution sticks out of them, so its *reconstruction error* (the
squared distance between the standardised event and its projection on the
components) grows. NannyML calls this data reconstruction drift.

Reference, from mergeable moments of ``d`` numeric features (``Halves``):

* events go alternately, by their position in the window (even, odd), to two
  halves A and B, each kept as count, sum and sum of outer products (upper
  triangle). Values are summed minus a per-feature ``shift`` (the monitor's
  anchor, a typical value), so a feature far from zero (epoch seconds, years)
  keeps its digits when the covariance is taken as a difference of moments;
* a missing value is imputed with the running mean of the feature's values
  observed earlier in the same window (the shift before the first): an
  imputed value adds no deviation, so imputation cannot invent a
  correlation. Later windows impute the reference mean (0 once standardised):
  the same rule;
* means, standard deviations and components come from half A only, and the
  baseline is A's model's mean error on half B, computed exactly from B's
  moments: ``E||Q z||^2 = tr(Q E[z z^T])`` with ``Q`` the projector on what the
  components leave out. A held-out baseline: the in-sample error of a PCA is
  biased low (the components were fitted to those very events), which makes
  every later window look drifted. B and the later windows are both unseen by
  the fit, so under no change they have the same expected error.

Components: the fewest that explain ``variance`` (a share) of A's standardised
variance, and at most ``d - 1``, so something is always left to reconstruct.
Features constant in half A are left out (nothing to standardise by).

Windows keep ``[n, sum, sum of squares]`` of their events' errors: three
numbers, whatever the number of features. A window is judged by a one-sided
z-test of its mean error against the baseline; its standard error is
``sqrt(var * (1/n + 1/n_B))``, with ``var`` the window's own per-event variance
(under no change it is B's too; B's fourth moments are not kept), so the
baseline's own sampling noise is counted, as ``1/n_ref`` is in the PSI noise
threshold. A decrease of the error is not flagged.

Batching never changes a result, to the last bit (for the same shift; the
monitor's anchors do not depend on batching either): every sum over events is
taken in event order (``cumsum``, or ``np.add.reduce`` across the rows of a
table), and an event's error comes from matrix products of one fixed shape
(``ERROR_BLOCK`` events), so BLAS sums its products in the same order whatever
the batch (a product's order can depend on its shape: numpy hands one row to
another BLAS routine). The project promises reports that do not depend on how
producers batch, and a float sum taken batch by batch would break that promise
in the last digits.

Sizes, for ``d`` features and ``k < d`` components, in numbers: ``Halves``
``2 + 5d + d(d+1)`` (1,082 for d = 30, about 20 KB as JSON; 84 KB for the
policy's largest d = 64); the fitted reference ``3d + kd + 4`` (at most 964
for d = 30, about 19 KB as JSON; 86 KB for d = 64).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import numpy.typing as npt
from scipy.special import ndtri

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


#: ``[n, sum, sum of squares]`` of a window's per-event reconstruction errors.
ErrorSums = list[float]


def choose_features(numeric: Sequence[str], max_features: int) -> list[str]:
    """The features the signal uses: the first ``max_features`` numeric ones by name.

    By name, not by arrival, so the choice does not depend on how producers
    order or batch their events.

    >>> choose_features(["b", "a", "c"], 2)
    ['a', 'b']
    """
    return sorted(numeric)[:max_features]


def matrix(columns: Sequence[Floats], n: int) -> Floats:
    """Columns as an ``n x d`` float matrix (NaN where missing)."""
    if not columns:
        return np.empty((n, 0), dtype=np.float64)
    return np.column_stack(columns).astype(np.float64, copy=False)


def empty_halves(shift: Sequence[float]) -> Halves:
    """Halves A and B of no events, summing values minus ``shift``."""
    d = len(shift)

    def zero() -> Moments:
        return {"n": 0, "sum": [0.0] * d, "outer": [0.0] * (d * (d + 1) // 2)}

    return {
        "shift": [float(s) for s in shift],
        "seen": [0] * d,
        "seen_sum": [0.0] * d,
        "a": zero(),
        "b": zero(),
    }


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


def _accumulate(m: Moments, xt: Floats) -> Moments:
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
    # features x events: each feature's values one after the other in memory
    xs = np.subtract(x.T, np.asarray(halves["shift"], dtype=np.float64)[:, np.newaxis], order="C")
    seen = np.isfinite(xs)
    values = np.where(seen, xs, 0.0)
    # Per event, the count and sum of the values observed before it (exclusive),
    # summed one event after the other along each feature's row.
    counts = np.empty((d, n), dtype=np.int64)
    counts[:, 0] = halves["seen"]
    counts[:, 1:] = seen[:, :-1]
    np.cumsum(counts, axis=1, out=counts)
    sums = np.empty((d, n))
    sums[:, 0] = halves["seen_sum"]
    sums[:, 1:] = values[:, :-1]
    np.cumsum(sums, axis=1, out=sums)
    fill = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    xs = np.where(seen, xs, fill)
    first = offset % 2  # 0: the batch's first event goes to A, 1: to B
    return {
        "shift": halves["shift"],
        "seen": (counts[:, -1] + seen[:, -1]).tolist(),
        "seen_sum": (sums[:, -1] + values[:, -1]).tolist(),
        "a": _accumulate(halves["a"], xs[:, first::2]),
        "b": _accumulate(halves["b"], xs[:, 1 - first :: 2]),
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
        "shift": a["shift"],
        "seen": [p + q for p, q in zip(a["seen"], b["seen"], strict=True)],
        "seen_sum": add(a["seen_sum"], b["seen_sum"]),
        "a": moments(a["a"], b["a"]),
        "b": moments(a["b"], b["b"]),
    }


def _mean_cov(m: Moments) -> tuple[Floats, Floats, Floats]:
    """Mean (minus the shift), covariance, and mean square about the shift."""
    n = m["n"]
    d = len(m["sum"])
    mean = np.asarray(m["sum"], dtype=np.float64) / n
    square = _square(m["outer"], d) / n
    return mean, square - np.outer(mean, mean), np.diag(square)


def fit(names: Sequence[str], halves: Halves, *, variance: float) -> PcaReference | None:
    """PCA on half A's standardised features, baseline error on half B.

    None when there is nothing joint to judge: fewer than two features that vary
    in A, fewer than two events in A or one in B, or B lying exactly in the
    components (a zero baseline, from which no relative change can be told).
    """
    a, b = halves["a"], halves["b"]
    if a["n"] < 2 or b["n"] < 1:
        return None
    mean_a, cov_a, square_a = _mean_cov(a)
    mean_b, cov_b, _ = _mean_cov(b)
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
    shift = np.asarray(halves["shift"], dtype=np.float64)[idx]
    return {
        "names": [names[i] for i in idx.tolist()],
        "means": (shift + mean_a[idx]).tolist(),
        "sds": sd.tolist(),
        "components": components.tolist(),
        "explained": float(share[k - 1]),
        "baseline": baseline,
        "n_fit": a["n"],
        "n_baseline": b["n"],
    }


#: Events per matrix product in ``errors``: every product has this one shape.
ERROR_BLOCK = 512


def errors(ref: PcaReference, x: Floats) -> Floats:
    """Per-event squared reconstruction errors of the rows of ``x`` (columns in
    ``ref["names"]`` order; NaN where missing, which counts as the reference mean).

    ``||z||^2 - ||P z||^2`` for orthonormal components ``P``. ``P z`` of the
    whole batch is a matrix product, taken in blocks of ``ERROR_BLOCK`` events
    (the last one padded with zeros) so that every product has the same shape:
    BLAS sums each event's products along the features in the same order
    whatever the batch, and an event's error does not depend on the other
    events of its batch. The squares are summed feature by feature.
    ``x`` is read fastest as the transpose of a features x events array.
    """
    n = x.shape[0]
    d = len(ref["names"])
    width = -(-n // ERROR_BLOCK) * ERROR_BLOCK
    z = np.zeros((d, width))  # features x events, padded with events of error 0
    body = z[:, :n]
    np.subtract(x.T, np.asarray(ref["means"], dtype=np.float64)[:, None], out=body)
    body /= np.asarray(ref["sds"], dtype=np.float64)[:, None]
    body[~np.isfinite(body)] = 0.0
    components = np.asarray(ref["components"], dtype=np.float64).reshape(-1, d)
    projected = np.empty((components.shape[0], width))
    for lo in range(0, width, ERROR_BLOCK):
        np.matmul(components, z[:, lo : lo + ERROR_BLOCK], out=projected[:, lo : lo + ERROR_BLOCK])
    # (rows summed one after the other: at least ERROR_BLOCK columns, never a vector)
    square = np.add.reduce(np.square(z), axis=0)
    square -= np.add.reduce(np.square(projected), axis=0)
    out: Floats = np.maximum(square[:n], 0.0)
    return out


def add_errors(sums: ErrorSums | None, err: Floats) -> ErrorSums:
    """``[n, sum, sum of squares]`` with the events' errors added, in event order.

    >>> add_errors(add_errors(None, np.array([1.0, 2.0])), np.array([3.0]))
    [3.0, 6.0, 14.0]
    """
    n, total, squares = sums if sums is not None else (0.0, 0.0, 0.0)
    return [n + err.size, _sum_in_order(total, err), _sum_in_order(squares, err * err)]


def sum_errors(parts: Sequence[ErrorSums]) -> ErrorSums:
    """The sums of the union of the parts' events (e.g. the panes of a window).

    >>> sum_errors([[2.0, 3.0, 5.0], [1.0, 3.0, 9.0]])
    [3.0, 6.0, 14.0]
    """
    return [float(sum(column)) for column in zip(*parts, strict=True)] if parts else [0.0] * 3


@dataclass(frozen=True)
class ErrorTest:
    """A window's mean error against the baseline; no judgement."""

    n: int
    error: float  # the window's mean squared reconstruction error
    baseline: float
    relative_change: float  # error / baseline - 1
    z: float | None  # None when the window's errors do not vary
    noise: float | None  # the mean error that noise alone exceeds with probability alpha

    def beats_noise(self) -> bool:
        return self.error > self.baseline if self.noise is None else self.error > self.noise


def compare_errors(ref: PcaReference, sums: ErrorSums, *, alpha: float) -> ErrorTest:
    """One-sided z-test of a window's mean error against the held-out baseline.

    >>> ref = {"baseline": 1.0, "n_baseline": 400}
    >>> t = compare_errors(ref, [400.0, 480.0, 800.0], alpha=1e-3)  # type: ignore[arg-type]
    >>> round(t.relative_change, 3), round(t.z or 0, 2), t.beats_noise()
    (0.2, 3.77, True)
    """
    n, total, squares = sums
    mean = total / n
    var = max(squares - total * mean, 0.0) / (n - 1) if n > 1 else 0.0
    se = math.sqrt(var * (1.0 / n + 1.0 / ref["n_baseline"]))
    base = ref["baseline"]
    z = (mean - base) / se if se > 0 else None
    noise = base + _norm_isf(alpha) * se if se > 0 else None
    return ErrorTest(
        n=int(n), error=mean, baseline=base, relative_change=mean / base - 1.0, z=z, noise=noise
    )


@functools.lru_cache(maxsize=256)
def _norm_isf(alpha: float) -> float:
    return float(-ndtri(alpha))  # the normal's upper alpha quantile
