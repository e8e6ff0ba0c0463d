"""Performance before the labels come: confidence-based performance estimation (CBPE).

Labels come late (fraud chargebacks: 30 to 90 days). A binary classifier's
window can be judged from its scores as soon as it closes, if the scores can
be turned into probabilities that are right on average: a prediction with
calibrated probability ``q`` of the positive class is a true positive with
probability ``q`` when predicted positive, a false positive with ``1 - q``.
Summed over the window this is the *expected confusion matrix*, and the
metrics read from it (NannyML's CBPE) are:

* ``accuracy``, ``precision``, ``recall``, ``f1``: ratios of expected counts
  (``E[TP] / (E[TP] + E[FP])``, ...), with the model's own predicted class
  (``y_pred``), as the realized metrics use it;
* ``roc_auc``: the ROC curve of expected counts. On the fine score bins of
  :class:`streams.kpi.classification.ClassificationKpi` a bin of ``c``
  predictions holds ``c q`` expected positives and ``c (1 - q)`` expected
  negatives, and the AUC is read from them exactly as the realized AUC is
  read from the real counts (``_binned_auc``: a shared bin counts half);
* ``label_positive_rate``: the expected share of positives.

**Calibration** (:func:`fit_calibration`, at ``driftline reference build``):
the reference's scores and labels on the same fine bins, and
``scipy.optimize.isotonic_regression`` of each bin's positive share weighted
by its count: the monotone map from score to probability that fits the
reference best. Stored as blocks (:class:`Calibration`): the score edges where
the probability changes (each a fine-bin edge), the probability of each block
and the reference events in it. A window's fine bin gets the probability of
the block its midpoint falls in; bins that held no reference event take the
block around them.

**The band** is a 95 % interval for the metric the labels will give, should
the calibration be right: each bin's positives are drawn as
``Binomial(c, q)`` (the labels' own noise, which dominates on small windows),
with each block's ``q`` drawn as ``Binomial(n_b, q_b) / n_b`` (the reference's
noise: a block fitted on few events is uncertain), ``DRAWS`` (400) times
with a fixed seed, so the same window gives the same band in a replay. Its
coverage is measured in tests/streams/kpi/test_estimate.py (covariate shift,
windows of 2,000: the realized AUC falls inside it in about 95 % of windows).

**What it cannot see.** Under covariate shift (P(x) changes, P(y|x) does
not) the calibration stays right and the estimate follows the realized
metrics. Under *concept drift* (P(y|x) changes) the scores do not move, the
calibration is wrong, and the estimate does not follow the drop: that is
what the concept-drift detectors and the labels are for. Regression models
get no estimate (their scores carry no class probability).

Window state (``ScoreHistogram``): predictions with a valid score (in [0, 1])
and a usable predicted class, counted per fine bin and predicted class: ``2 x
fine bins`` integers (about 420, under 3 KB of JSON), whatever the traffic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import numpy as np
import numpy.typing as npt

from schemas.kpi_metrics import ESTIMATED_METRICS
from streams.kpi.classification import ClassificationKpi

#: Metrics estimated from scores (what ``kpi.estimated_targets`` may name).
ESTIMATED = ESTIMATED_METRICS
#: Monte Carlo draws of the band, and their seed (fixed: a replay gives the same band).
DRAWS = 400
SEED = 20_261_203
#: Two-sided coverage of the band.
COVERAGE = 0.95


class ScoreHistogram(TypedDict):
    p0: list[int]  # scored predictions with predicted class 0, per fine score bin
    p1: list[int]  # ... with predicted class 1
    unscored: int  # predictions with no valid score or no usable predicted class


class Calibration(TypedDict):
    """A monotone map from score to probability: block ``k`` covers scores in
    ``[edges[k - 1], edges[k])`` (the first from 0, the last to 1 included)."""

    edges: list[float]  # increasing, in (0, 1): where the probability changes
    probability: list[float]  # per block, non-decreasing, in [0, 1]
    count: list[int]  # reference events per block


class Estimate(TypedDict):
    value: float
    lower: float
    upper: float


def initialize(kpi: ClassificationKpi) -> ScoreHistogram:
    return {"p0": [0] * kpi.fine_bins, "p1": [0] * kpi.fine_bins, "unscored": 0}


def update(
    kpi: ClassificationKpi,
    state: ScoreHistogram,
    y_pred: npt.ArrayLike,
    scores: npt.ArrayLike,
) -> ScoreHistogram:
    """Count predictions: ``y_pred`` 0/1 or -1 (unusable), ``scores`` NaN = none.

    >>> kpi = ClassificationKpi()
    >>> h = update(kpi, initialize(kpi), np.array([1, 0, -1]), np.array([0.9, 0.1, 0.5]))
    >>> sum(h["p1"]), sum(h["p0"]), h["unscored"]
    (1, 1, 1)
    """
    if len(state["p0"]) != kpi.fine_bins:
        raise ValueError(f"histogram has {len(state['p0'])} bins, the kernel {kpi.fine_bins}")
    s = np.asarray(scores, dtype=np.float64)
    p = np.asarray(y_pred)
    if s.shape != p.shape:
        raise ValueError(f"scores and y_pred differ in length ({s.size} vs {p.size})")
    ok = ~np.isnan(s) & (s >= 0.0) & (s <= 1.0) & ((p == 0) | (p == 1))
    idx = kpi.bin_of(s[ok])
    cls = p[ok]
    return {
        "p0": (
            np.asarray(state["p0"], dtype=np.int64)
            + np.bincount(idx[cls == 0], minlength=kpi.fine_bins)
        ).tolist(),
        "p1": (
            np.asarray(state["p1"], dtype=np.int64)
            + np.bincount(idx[cls == 1], minlength=kpi.fine_bins)
        ).tolist(),
        "unscored": state["unscored"] + int(s.size - np.count_nonzero(ok)),
    }


def scored(state: ScoreHistogram) -> int:
    return int(sum(state["p0"]) + sum(state["p1"]))


def fit_calibration(
    kpi: ClassificationKpi, scores: npt.ArrayLike, labels: npt.ArrayLike
) -> Calibration | None:
    """Isotonic calibration of ``scores`` (in [0, 1]; others are ignored) against 0/1
    ``labels`` on the kernel's fine bins; None without both classes.

    >>> kpi = ClassificationKpi()
    >>> cal = fit_calibration(kpi, [0.1, 0.2, 0.3, 0.8, 0.9], [0, 1, 0, 1, 1])
    >>> cal["probability"], cal["count"]
    ([0.0, 0.5, 1.0], [1, 2, 2])
    """
    from scipy.optimize import isotonic_regression  # only at reference build: not on import

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    ok = ~np.isnan(s) & (s >= 0.0) & (s <= 1.0) & ((y == 0) | (y == 1))
    s, y = s[ok], y[ok]
    if not (y.any() and (1 - y).any()):
        return None
    idx = kpi.bin_of(s)
    n = np.bincount(idx, minlength=kpi.fine_bins).astype(np.float64)
    pos = np.bincount(idx, weights=y, minlength=kpi.fine_bins)
    used = np.flatnonzero(n)
    fitted = isotonic_regression(pos[used] / n[used], weights=n[used], increasing=True).x
    # Blocks: runs of used bins with one fitted value; a block starts at its first bin.
    change = np.flatnonzero(np.diff(fitted) != 0) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [used.size]])
    counts = [int(n[used[a:b]].sum()) for a, b in zip(starts, ends, strict=True)]
    edges = [float(kpi.edges[used[a]]) for a in change]
    return {
        "edges": edges,
        "probability": [float(fitted[a]) for a in starts],
        "count": counts,
    }


def bin_probabilities(
    kpi: ClassificationKpi, calibration: Calibration
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Each fine bin's calibrated probability, and the block it belongs to."""
    mid = (kpi.edges[:-1] + kpi.edges[1:]) / 2
    block = np.searchsorted(
        np.asarray(calibration["edges"], dtype=np.float64), mid, side="right"
    ).astype(np.int64)
    q = np.asarray(calibration["probability"], dtype=np.float64)[block]
    return q, block


def _metrics(
    tp: npt.NDArray[np.float64],
    fp: npt.NDArray[np.float64],
    fn: npt.NDArray[np.float64],
    tn: npt.NDArray[np.float64],
    pos: npt.NDArray[np.float64],
    neg: npt.NDArray[np.float64],
) -> dict[str, npt.NDArray[np.float64]]:
    """Metrics of (expected or drawn) counts: 1-D for one window, 2-D rows for draws;
    NaN where undefined. ``pos``/``neg``: positives and negatives per fine bin."""
    n = tp + fp + fn + tn
    with np.errstate(invalid="ignore", divide="ignore"):
        above = np.flip(np.cumsum(np.flip(pos, -1), -1), -1) - pos
        pairs = pos.sum(-1) * neg.sum(-1)
        return {
            "roc_auc": (neg * (above + 0.5 * pos)).sum(-1) / pairs,
            "accuracy": (tp + tn) / n,
            "precision": tp / (tp + fp),
            "recall": tp / (tp + fn),
            "f1": 2 * tp / (2 * tp + fp + fn),
            "label_positive_rate": (tp + fn) / n,
        }


def estimate(
    kpi: ClassificationKpi, state: ScoreHistogram, calibration: Calibration
) -> dict[str, Estimate]:
    """The estimated metrics with their band; a metric undefined on the expected counts
    is left out (an empty dict without scored predictions).

    >>> kpi = ClassificationKpi()
    >>> cal = {"edges": [0.5], "probability": [0.1, 0.9], "count": [1000, 1000]}
    >>> h = update(kpi, initialize(kpi), np.array([0] * 500 + [1] * 500),
    ...            np.array([0.2] * 500 + [0.8] * 500))
    >>> e = estimate(kpi, h, cal)
    >>> round(e["accuracy"]["value"], 3), round(e["roc_auc"]["value"], 3)
    (0.9, 0.9)
    >>> e["accuracy"]["lower"] < 0.9 < e["accuracy"]["upper"]
    True
    """
    h0 = np.asarray(state["p0"], dtype=np.float64)
    h1 = np.asarray(state["p1"], dtype=np.float64)
    if not (h0.sum() + h1.sum()):
        return {}
    q, block = bin_probabilities(kpi, calibration)
    tp, fp = (h1 * q).sum(), (h1 * (1 - q)).sum()
    fn, tn = (h0 * q).sum(), (h0 * (1 - q)).sum()
    h = h0 + h1
    values = _metrics(
        np.asarray(tp), np.asarray(fp), np.asarray(fn), np.asarray(tn), h * q, h * (1 - q)
    )
    # The band: the reference's noise on each block's probability, the labels' on each bin.
    rng = np.random.default_rng(SEED)
    count = np.asarray(calibration["count"], dtype=np.int64)
    prob = np.asarray(calibration["probability"], dtype=np.float64)
    q_draw = (rng.binomial(count, prob, size=(DRAWS, count.size)) / np.maximum(count, 1))[:, block]
    b1 = rng.binomial(h1.astype(np.int64), q_draw).astype(np.float64)
    b0 = rng.binomial(h0.astype(np.int64), q_draw).astype(np.float64)
    d_tp, d_fn = b1.sum(1), b0.sum(1)
    d_fp, d_tn = h1.sum() - d_tp, h0.sum() - d_fn
    pos = b0 + b1
    drawn = _metrics(d_tp, d_fp, d_fn, d_tn, pos, h - pos)
    tail = (1 - COVERAGE) / 2 * 100
    out: dict[str, Estimate] = {}
    for name in ESTIMATED:
        value = float(values[name])
        if not np.isfinite(value):
            continue
        lo, hi = _band(drawn[name], tail)
        out[name] = {"value": value, "lower": min(lo, value), "upper": max(hi, value)}
    return out


def _band(draws: npt.NDArray[np.float64], tail: float) -> tuple[float, float]:
    """Percentiles of the draws where the metric is defined (undefined draws, e.g. no
    positive drawn at all, are left out)."""
    ok = draws[np.isfinite(draws)]
    if not ok.size:
        return float("inf"), float("-inf")
    lo, hi = np.percentile(ok, [tail, 100 - tail])
    return float(lo), float(hi)


def merge(a: ScoreHistogram, b: ScoreHistogram) -> ScoreHistogram:
    return {
        "p0": (np.asarray(a["p0"], dtype=np.int64) + b["p0"]).tolist(),
        "p1": (np.asarray(a["p1"], dtype=np.int64) + b["p1"]).tolist(),
        "unscored": a["unscored"] + b["unscored"],
    }


def describe(calibration: Calibration) -> str:
    """One line for logs: blocks and reference events."""
    return f"{len(calibration['probability'])} blocks over {sum(calibration['count'])} events"


__all__: Sequence[str] = [
    "COVERAGE",
    "ESTIMATED",
    "Calibration",
    "Estimate",
    "ScoreHistogram",
    "estimate",
    "fit_calibration",
    "initialize",
    "update",
]
