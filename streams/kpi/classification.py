"""Binary classification KPIs over a window: a fold over a small, mergeable state.

Inputs per batch are the labeled events' ``y_true`` and ``y_pred`` as 0/1
(see :func:`streams.kpi.labels.to_binary`) and, optionally, ``scores``: the
probability of the positive label, NaN where an event carried none.

Threshold metrics come from the confusion counts and are exact: ``accuracy``,
``precision``, ``recall``, ``f1`` (``2 tp / (2 tp + fp + fn)``, sklearn's
definition), ``positive_rate`` (share of *predicted* positives) and
``label_positive_rate`` (share of actual positives). Every labeled event counts
for them, scored or not.

Score metrics use only the scored events (a score in [0, 1]; NaN means no score,
any other value is not a probability and is counted in ``invalid_scores``
instead):

* ``log_loss`` and ``brier`` are exact, from running sums kept exactly
  (:mod:`streams.summaries.exact_sum`: the same, bit for bit, whatever order
  and batches the labels came in). As sklearn does,
  the log loss clips each probability of the observed class into
  ``[eps, 1 - eps]`` (``eps`` = float64 machine epsilon), so a confident
  mistake costs about 36, not infinity.
* ``roc_auc`` is read from positive/negative counts on fine score bins: the
  trapezoid over the ROC points at the bin edges, which counts a positive and
  a negative in the same bin as half a correctly ordered pair (sklearn counts
  exact ties the same way). The only error is the ordering inside a bin, so
  it is at most half the share of (positive, negative) pairs that share a
  bin. The fine bins are ``bins`` (200) equal steps of *log-odds* over
  [-10, 10] (scores 4.5e-5 to 1 - 4.5e-5), plus the ECE bin edges: real
  classifiers pile their scores up near 0 (a fraud model's median score is
  a few percent), where equal-width bins of 0.01 put most events in three
  bins and misread the AUC by 0.006 (measured on the simulator's traffic);
  log-odds steps of 0.1 keep 20-odd bins in that range. Measured within 1e-3
  of sklearn's exact ``roc_auc_score``; exact when only tied scores share a bin.
* ``ece``: expected calibration error of the positive-class probability on
  ``ece_bins`` (10) equal-width bins ``[k/10, (k+1)/10)`` (the last one
  includes 1): ``sum_k n_k / n * |positive share_k - mean score_k|``. Each ECE
  bin is exactly a union of fine bins (the ECE edges are fine edges too, and
  an event's fine bin is chosen inside its ECE bin ``floor(10 s)``, so
  floating-point rounding cannot disagree), and the state keeps per-fine-bin
  score sums, so the ECE is exact, not a binned approximation of one. The
  sums add each score rounded to a multiple of ``2**-SCORE_GRID_BITS`` (32:
  within 1.2e-10 of it), so that each bin's sum is a float sum of multiples of
  ``2**-32``: exact, hence the same whatever the order of the scores, while it
  is below ``2**21`` (two million scores near 1 in one fine bin of one window,
  hundreds of millions of typical scores; past that it is as exact as any
  float sum, and may differ in its last bits between two runs).

A metric that is undefined is *left out* of :meth:`ClassificationKpi.metrics`,
never NaN: everything with no labeled events; ``precision`` with no predicted
positives; ``recall`` with no actual positives; ``f1`` with neither (only
true negatives); the score metrics with no scored event; ``roc_auc`` unless
the scored events hold both classes. ``business_value_per_prediction`` is left
out with no labeled events (see :mod:`streams.kpi.business`).

State (JSON-able)::

    {"bins": int, "ece_bins": int, "tp": int, "fp": int, "tn": int, "fn": int,
     "invalid_scores": int, "pos": [int] * bins, "neg": [int] * bins,
     "score_sum": [float] * bins, "log_loss_sum": [float], "brier_sum": [float]}

(the two sums as :mod:`streams.summaries.exact_sum` keeps them, a float or two;
states written before hold a plain float there, read as the same sum).

Its size does not depend on traffic: about ``3 * bins + 11`` numbers, under 5 KB of
JSON for the default 100 bins up to a billion events (a million events: about
3.0 KB, asserted < 4,000 bytes in the tests).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict

import numpy as np
import numpy.typing as npt

from streams.kpi.business import business_metrics, check_costs
from streams.summaries import exact_sum
from streams.summaries.exact_sum import ExactSum

_EPS = float(np.finfo(np.float64).eps)
#: Scores are added to their bin's sum on a grid of 2**-SCORE_GRID_BITS (module docstring).
SCORE_GRID_BITS = 32
_SCORE_GRID = float(2**SCORE_GRID_BITS)
#: Fine score bins are equal steps of log-odds over [-LOG_ODDS_SPAN, LOG_ODDS_SPAN].
LOG_ODDS_SPAN = 10.0


class ClassificationState(TypedDict):
    bins: int
    ece_bins: int
    tp: int
    fp: int
    tn: int
    fn: int
    invalid_scores: int
    pos: list[int]  # scored events with label 1, per fine score bin
    neg: list[int]  # scored events with label 0, per fine score bin
    score_sum: list[float]  # sum of the scores, per fine score bin
    log_loss_sum: ExactSum
    brier_sum: ExactSum


def as_binary(values: npt.ArrayLike, name: str) -> npt.NDArray[np.int64]:
    """A 1-D array of 0/1 (bools accepted); anything else is a ValueError."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric 0/1 (map raw labels with to_binary first)")
    if not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{name} must hold only 0 and 1 (drop missing labels, -1, first)")
    return arr.astype(np.int64)


class ClassificationKpi:
    """Fold over :class:`ClassificationState`; the object holds configuration only.

    ``costs`` (``{"tp": .., "fp": .., "tn": .., "fn": ..}``, value per event) adds
    ``business_value`` and ``business_value_per_prediction`` to the metrics.

    >>> kpi = ClassificationKpi(costs={"fn": -120.0, "fp": -5.0})
    >>> st = kpi.update(kpi.initialize(), np.array([1, 0, 1, 0]), np.array([1, 0, 0, 1]),
    ...                 np.array([0.9, 0.2, 0.4, np.nan]))
    >>> m = kpi.metrics(st)
    >>> m["accuracy"], m["precision"], m["roc_auc"], m["business_value"]
    (0.5, 0.5, 1.0, -125.0)
    >>> sorted(kpi.metrics(kpi.initialize()))  # nothing is defined without events
    ['business_value']
    """

    BINS = 200
    ECE_BINS = 10

    def __init__(
        self,
        *,
        bins: int = BINS,
        ece_bins: int = ECE_BINS,
        costs: Mapping[str, float] | None = None,
    ) -> None:
        if ece_bins < 1 or bins < 2:
            raise ValueError("bins must be at least 2 and ece_bins at least 1")
        self.bins = bins
        self.ece_bins = ece_bins
        self.costs = None if costs is None else check_costs(costs)
        ece_edges = np.arange(ece_bins + 1) / ece_bins
        logit = np.linspace(-LOG_ODDS_SPAN, LOG_ODDS_SPAN, bins + 1)
        #: Fine bin i is [edges[i], edges[i + 1]); the last one includes 1.
        self.edges: npt.NDArray[np.float64] = np.unique(
            np.concatenate([1.0 / (1.0 + np.exp(-logit[1:-1])), ece_edges]))
        #: First fine bin of each ECE bin (and one past the last).
        self._ece_start = np.searchsorted(self.edges, ece_edges).astype(np.int64)
        self._ece_start[-1] = self.edges.size - 1
        self.fine_bins = int(self.edges.size - 1)

    def initialize(self) -> ClassificationState:
        return {
            "bins": self.bins,
            "ece_bins": self.ece_bins,
            "tp": 0,
            "fp": 0,
            "tn": 0,
            "fn": 0,
            "invalid_scores": 0,
            "pos": [0] * self.fine_bins,
            "neg": [0] * self.fine_bins,
            "score_sum": [0.0] * self.fine_bins,
            "log_loss_sum": [],
            "brier_sum": [],
        }

    def _check(self, state: ClassificationState) -> None:
        if (state["bins"], state["ece_bins"]) != (self.bins, self.ece_bins):
            raise ValueError(
                f"state has {state['bins']}/{state['ece_bins']} bins, this kernel "
                f"{self.bins}/{self.ece_bins}"
            )

    def bin_of(self, scores: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        """Fine bin of scores in [0, 1], nested in the ECE bin ``floor(ece_bins * s)``.

        >>> kpi = ClassificationKpi()
        >>> b = kpi.bin_of(np.array([0.0, 0.02, 0.025, 0.5, 1.0])).tolist()
        >>> b[0], b[1] < b[2] < b[3] < b[4] == kpi.fine_bins - 1
        (0, True)
        """
        coarse = np.minimum(np.floor(scores * self.ece_bins).astype(np.int64), self.ece_bins - 1)
        fine = np.searchsorted(self.edges, scores, side="right").astype(np.int64) - 1
        first = self._ece_start[coarse]
        last = self._ece_start[coarse + 1] - 1
        out: npt.NDArray[np.int64] = np.clip(fine, first, last)
        return out

    def update(
        self,
        state: ClassificationState,
        y_true: npt.ArrayLike,
        y_pred: npt.ArrayLike,
        scores: npt.ArrayLike | None = None,
    ) -> ClassificationState:
        """Add one batch of labeled events (0/1 arrays of equal length; scores NaN = none)."""
        self._check(state)
        t = as_binary(y_true, "y_true")
        p = as_binary(y_pred, "y_pred")
        if t.shape != p.shape:
            raise ValueError(f"y_true and y_pred differ in length ({t.size} vs {p.size})")
        tn, fp, fn, tp = np.bincount(2 * t + p, minlength=4).tolist()
        out: ClassificationState = {
            **state,
            "tp": state["tp"] + tp,
            "fp": state["fp"] + fp,
            "tn": state["tn"] + tn,
            "fn": state["fn"] + fn,
        }
        if scores is None:
            return out
        s = np.asarray(scores, dtype=np.float64)
        if s.shape != t.shape:
            raise ValueError(f"scores and y_true differ in length ({s.size} vs {t.size})")
        nan = np.isnan(s)
        ok = ~nan & (s >= 0.0) & (s <= 1.0)
        out["invalid_scores"] = state["invalid_scores"] + int(np.count_nonzero(~nan & ~ok))
        if not ok.any():
            return out
        ys, ss = t[ok], s[ok]
        idx = self.bin_of(ss)
        pos = np.bincount(idx[ys == 1], minlength=self.fine_bins)
        neg = np.bincount(idx[ys == 0], minlength=self.fine_bins)
        on_grid = np.round(ss * _SCORE_GRID) / _SCORE_GRID
        ssum = np.bincount(idx, weights=on_grid, minlength=self.fine_bins)
        # As sklearn.metrics.log_loss: clip the probability of each class, take the observed one's.
        p_obs = np.where(ys == 1, ss, 1.0 - ss)
        log_loss = -np.log(np.clip(p_obs, _EPS, 1.0 - _EPS))
        out["pos"] = (np.asarray(state["pos"], dtype=np.int64) + pos).tolist()
        out["neg"] = (np.asarray(state["neg"], dtype=np.int64) + neg).tolist()
        out["score_sum"] = (np.asarray(state["score_sum"], dtype=np.float64) + ssum).tolist()
        out["log_loss_sum"] = exact_sum.add(state["log_loss_sum"], log_loss)
        out["brier_sum"] = exact_sum.add(state["brier_sum"], np.square(ys - ss))
        return out

    def merge(self, a: ClassificationState, b: ClassificationState) -> ClassificationState:
        self._check(a)
        self._check(b)
        return {
            "bins": a["bins"],
            "ece_bins": a["ece_bins"],
            "tp": a["tp"] + b["tp"],
            "fp": a["fp"] + b["fp"],
            "tn": a["tn"] + b["tn"],
            "fn": a["fn"] + b["fn"],
            "invalid_scores": a["invalid_scores"] + b["invalid_scores"],
            "pos": (np.asarray(a["pos"], dtype=np.int64) + b["pos"]).tolist(),
            "neg": (np.asarray(a["neg"], dtype=np.int64) + b["neg"]).tolist(),
            "score_sum": (np.asarray(a["score_sum"], dtype=np.float64) + b["score_sum"]).tolist(),
            "log_loss_sum": exact_sum.merge(a["log_loss_sum"], b["log_loss_sum"]),
            "brier_sum": exact_sum.merge(a["brier_sum"], b["brier_sum"]),
        }

    @staticmethod
    def count(state: ClassificationState) -> int:
        """Labeled events folded in."""
        return state["tp"] + state["fp"] + state["tn"] + state["fn"]

    @staticmethod
    def scored(state: ClassificationState) -> int:
        """Labeled events with a valid score."""
        return int(sum(state["pos"]) + sum(state["neg"]))

    def metrics(self, state: ClassificationState) -> dict[str, float]:
        """The defined metrics (see the module docstring for what is left out when)."""
        self._check(state)
        tp, fp, tn, fn = state["tp"], state["fp"], state["tn"], state["fn"]
        n = tp + fp + tn + fn
        out: dict[str, float] = {}
        if n:
            out["accuracy"] = (tp + tn) / n
            out["positive_rate"] = (tp + fp) / n
            out["label_positive_rate"] = (tp + fn) / n
        if tp + fp:
            out["precision"] = tp / (tp + fp)
        if tp + fn:
            out["recall"] = tp / (tp + fn)
        if 2 * tp + fp + fn:
            out["f1"] = 2 * tp / (2 * tp + fp + fn)
        pos = np.asarray(state["pos"], dtype=np.int64)
        neg = np.asarray(state["neg"], dtype=np.int64)
        n_pos, n_neg = int(pos.sum()), int(neg.sum())
        scored = n_pos + n_neg
        if scored:
            out["log_loss"] = exact_sum.value(state["log_loss_sum"]) / scored
            out["brier"] = exact_sum.value(state["brier_sum"]) / scored
            out["ece"] = self._ece(pos, state["score_sum"], scored)
        if n_pos and n_neg:
            out["roc_auc"] = _binned_auc(pos, neg)
        if self.costs is not None:
            out.update(business_metrics({"tp": tp, "fp": fp, "tn": tn, "fn": fn}, self.costs))
        return out

    def _ece(self, pos: npt.NDArray[np.int64], score_sum: list[float], scored: int) -> float:
        starts = self._ece_start[:-1]
        pos_k = np.add.reduceat(pos, starts)
        sum_k = np.add.reduceat(np.asarray(score_sum, dtype=np.float64), starts)
        # n_k / n * |pos_k / n_k - sum_k / n_k| = |pos_k - sum_k| / n
        return float(np.abs(pos_k - sum_k).sum() / scored)


def _binned_auc(pos: npt.NDArray[np.int64], neg: npt.NDArray[np.int64]) -> float:
    """P(score of a positive > score of a negative), a shared bin counting half.

    >>> _binned_auc(np.array([0, 1, 1]), np.array([1, 1, 0]))  # (1 + 1 + 1 + .5) / 4
    0.875
    """
    above = np.cumsum(pos[::-1])[::-1] - pos  # positives in higher bins
    pairs = float(pos.sum()) * float(neg.sum())
    return float((neg * (above + 0.5 * pos)).sum() / pairs)
