"""One KPI window of one model version and variant: every accumulator, and the verdict.

The KPI agent keeps one ``WindowState`` per (model, version, variant, window)
and calls, as events come:

* :meth:`KpiWindow.add_predictions` with the window's prediction events
  (serving health: errors, latency);
* :meth:`KpiWindow.add_labeled` with predictions whose label just joined
  (quality: classification or regression, label delay, per-segment slices;
  it also returns their errors, for the concept-drift detector);
* :meth:`KpiWindow.add_expired` for predictions whose label never came;
* :meth:`KpiWindow.mark_concept_drift` when the detector fired on one of its labels;

and :meth:`KpiWindow.report` when the window is (re)reported: the metrics,
segment slices and disparity, and the status against the policy's targets.

A matched prediction is the dict the agent stored while it waited for its
label: ``{"p": prediction, "s": score or None, "t": ts_ms, "g": {segment key:
value}}``. Labels or predictions that are missing (null, blank) cannot be
judged: they are counted in ``unusable_labels``, not folded in as negatives.

State size: serving health under 12 KB (two log histograms), classification
about 4 KB (100 score bins) or regression 5 numbers, and per segment value a
coarse classification slice (10 score bins, about 0.6 KB) for at most
``max_segment_values`` values per segment key (later values share "other").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, NotRequired, TypedDict

import numpy as np
import numpy.typing as npt

from schemas.policy import KpiPolicy
from schemas.reference import PerformanceBands
from schemas.reports import KpiStatus, KpiThreshold, ReferenceBandsInfo
from streams.kpi import estimate as cbpe
from streams.kpi.classification import ClassificationKpi, ClassificationState
from streams.kpi.concept import classification_errors, regression_errors
from streams.kpi.disparity import segment_disparity
from streams.kpi.labels import MISSING, to_binary
from streams.kpi.regression import RegressionKpi, RegressionState
from streams.kpi.serving import ServingHealth, ServingState
from streams.kpi.thresholds import judge

#: Segment values beyond ``max_segment_values`` per key are counted under this name.
OTHER = "other"



class Waiting(TypedDict):
    """A prediction as the label join keeps it until its label comes (``streams.join``).

    The names are one letter on purpose: the join holds one of these for every
    prediction younger than ``label_ttl`` (millions of them; about 150 bytes
    each), and they are stored as written (renaming them needs a reader for
    both). ``v`` and ``a`` place it in its series; ``t`` in its window, or ``i``
    with count windows: the window's number, fixed when the prediction was counted
    (``streams.kpi.series``).
    """

    v: str  # model_version
    a: str  # variant
    t: int  # the prediction's ts, epoch ms
    p: Any  # prediction
    s: float | None  # score
    g: dict[str, Any]  # segment: the policy's segment keys the event carried
    i: NotRequired[int]  # count windows only: the window it was counted in


Matched = tuple[Waiting, Any, int]  # (the waiting prediction, its label, the label's ts_ms)
Quality = ClassificationState | RegressionState


class WindowState(TypedDict):
    serving: ServingState
    quality: Quality
    segments: dict[str, dict[str, Quality]]
    unusable_labels: int
    expired: int
    concept_drift: int
    #: classification: every scored prediction's score bin and predicted class, for the
    #: estimate before labels (streams.kpi.estimate); absent in windows stored before it
    scores: NotRequired[cbpe.ScoreHistogram]


@dataclass
class KpiResult:
    n_predictions: int
    n_labeled: int
    metrics: dict[str, float]
    concept_drift: bool
    status: KpiStatus
    breaches: list[str] = field(default_factory=list)
    segments: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    disparity: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    estimated_metrics: dict[str, cbpe.Estimate] = field(default_factory=dict)
    estimated: bool = False  # the status rests on estimated breaches alone
    thresholds: dict[str, list[KpiThreshold]] = field(default_factory=dict)
    bands: ReferenceBandsInfo | None = None


#: Why a regression window has no estimate (docs/kpi.md).
NO_REGRESSION_ESTIMATE = (
    "no performance estimate before labels for a regression model: its predictions carry no "
    "class probability to estimate from (the metrics come with the labels)"
)
NO_CALIBRATION = (
    "no performance estimate before labels: no calibration for this model version (publish "
    "a reference profile built from a file with the score and label columns: "
    "driftline reference build)"
)


class KpiWindow:
    """Fold over :class:`WindowState` for one model's :class:`KpiPolicy`."""

    def __init__(self, policy: KpiPolicy) -> None:
        self.policy = policy
        self.classification = policy.task == "classification"
        costs = policy.cost.model_dump() if policy.cost is not None else None
        self.quality = ClassificationKpi(costs=costs)
        self.slice = ClassificationKpi(bins=10, ece_bins=10)
        self.regression = RegressionKpi()
        self.serving = ServingHealth()

    def _new_quality(self, *, coarse: bool = False) -> Quality:
        if not self.classification:
            return self.regression.initialize()
        return (self.slice if coarse else self.quality).initialize()

    def initialize(self) -> WindowState:
        state: WindowState = {
            "serving": self.serving.initialize(),
            "quality": self._new_quality(),
            "segments": {},
            "unusable_labels": 0,
            "expired": 0,
            "concept_drift": 0,
        }
        if self.classification:
            state["scores"] = cbpe.initialize(self.quality)
        return state

    # -- inputs ------------------------------------------------------------------

    def add_predictions(self, state: WindowState, events: Sequence[dict[str, Any]]) -> WindowState:
        error = np.fromiter((bool(e.get("error", False)) for e in events), dtype=bool,
                            count=len(events))
        latency = np.fromiter(
            (np.nan if e.get("latency_ms") is None else e["latency_ms"] for e in events),
            dtype=np.float64, count=len(events))
        out: WindowState = {
            **state, "serving": self.serving.update(state["serving"], error, latency)}
        if self.classification and "scores" in state:
            # a window stored before the estimate existed keeps none (its report says so)
            pred = to_binary(_array([e.get("prediction") for e in events]),
                             self.policy.positive_label)
            scores = np.fromiter(
                (_score(e.get("score")) for e in events), dtype=np.float64, count=len(events))
            out["scores"] = cbpe.update(self.quality, state["scores"], pred, scores)
        return out

    def _pairs(self, predictions: Sequence[Waiting], labels: Sequence[Any]) -> tuple[
            npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[np.bool_]]:
        """(y_true, y_pred, usable): 0/1 codes for classification, floats for regression."""
        preds = list(map(_PREDICTION, predictions))
        if self.classification:
            labels = labels if isinstance(labels, list) else list(labels)
            t = to_binary(_array(labels), self.policy.positive_label)
            p = to_binary(_array(preds), self.policy.positive_label)
            return t, p, (t != MISSING) & (p != MISSING)
        tf = np.array([_number(v) for v in labels], dtype=np.float64)
        pf = np.array([_number(v) for v in preds], dtype=np.float64)
        return tf, pf, np.isfinite(tf) & np.isfinite(pf)

    def _fold(self, quality: Quality, t: npt.NDArray[Any], p: npt.NDArray[Any],
              s: npt.NDArray[np.float64], *, coarse: bool = False) -> Quality:
        if self.classification:
            kpi = self.slice if coarse else self.quality
            return kpi.update(quality, t, p, s)  # type: ignore[arg-type]
        return self.regression.update(quality, t, p)  # type: ignore[arg-type]

    def add_labeled(
        self, state: WindowState, matched: Sequence[Matched]
    ) -> tuple[WindowState, npt.NDArray[np.float64]]:
        """Fold labeled predictions in; also return their errors for the concept detector,
        one per entry of ``matched`` (NaN where the label or prediction is unusable)."""
        return self.add_labeled_columns(
            state,
            [m[0] for m in matched],
            [m[1] for m in matched],
            np.fromiter((m[2] for m in matched), dtype=np.int64, count=len(matched)),
        )

    def add_labeled_columns(
        self,
        state: WindowState,
        predictions: Sequence[Waiting],
        labels: Sequence[Any],
        label_ts_ms: npt.NDArray[np.int64],
        *,
        ts_ms: npt.NDArray[np.int64] | None = None,
    ) -> tuple[WindowState, npt.NDArray[np.float64]]:
        """``add_labeled`` with the matches as columns: the waiting predictions, their
        labels and the labels' times (``ts_ms``: the predictions' ``t``, if at hand)."""
        t, p, ok = self._pairs(predictions, labels)
        # None (no score) becomes NaN
        scores = np.array([w.get("s") for w in predictions], dtype=np.float64)
        if ts_ms is None:
            ts_ms = np.fromiter((w["t"] for w in predictions), dtype=np.int64,
                                count=len(predictions))
        delay_s = (label_ts_ms - ts_ms) / 1000.0
        idx = np.flatnonzero(ok)
        out: WindowState = {
            **state,
            "serving": self.serving.update_labels(state["serving"], delay_s[idx]),
            "quality": self._fold(state["quality"], t[idx], p[idx], scores[idx]),
            "unusable_labels": state["unusable_labels"] + int(len(predictions) - idx.size),
        }
        if self.policy.segments:
            out["segments"] = self._slices(state["segments"], predictions, idx, t, p, scores)
        errors = np.full(len(predictions), np.nan)
        if self.classification:
            errors[idx] = classification_errors(t[idx], p[idx])
        else:
            errors[idx] = regression_errors(t[idx], p[idx])
        return out, errors

    def errors(self, predictions: Sequence[Waiting], labels: Sequence[Any]
               ) -> npt.NDArray[np.float64]:
        """Each prediction's error against its label as ``add_labeled_columns`` counts it
        (0/1 miss, or absolute error; NaN where unreadable), folding nothing in."""
        t, p, ok = self._pairs(predictions, labels)
        errors = np.full(len(predictions), np.nan)
        idx = np.flatnonzero(ok)
        if self.classification:
            errors[idx] = classification_errors(t[idx], p[idx])
        else:
            errors[idx] = regression_errors(t[idx], p[idx])
        return errors

    def _slices(self, segments: dict[str, dict[str, Quality]], predictions: Sequence[Waiting],
                idx: npt.NDArray[np.intp], t: npt.NDArray[Any], p: npt.NDArray[Any],
                s: npt.NDArray[np.float64]) -> dict[str, dict[str, Quality]]:
        out = {key: dict(values) for key, values in segments.items()}
        for key in self.policy.segments:
            values = out.setdefault(key, {})
            groups: dict[str, list[int]] = {}
            for i in idx.tolist():
                raw = (predictions[i].get("g") or {}).get(key)
                if raw is None:
                    continue
                name = str(raw)
                if name not in values and len(values) >= self.policy.max_segment_values:
                    name = OTHER
                groups.setdefault(name, []).append(i)
            for name, rows in groups.items():
                prev = values.get(name) or self._new_quality(coarse=True)
                values[name] = self._fold(prev, t[rows], p[rows], s[rows], coarse=True)
        return out

    @staticmethod
    def add_expired(state: WindowState, n: int) -> WindowState:
        return {**state, "expired": state["expired"] + n}

    @staticmethod
    def mark_concept_drift(state: WindowState) -> WindowState:
        return {**state, "concept_drift": state["concept_drift"] + 1}

    # -- the verdict -------------------------------------------------------------

    def _metrics(self, quality: Quality, *, coarse: bool = False) -> dict[str, float]:
        if self.classification:
            kpi = self.slice if coarse else self.quality
            return kpi.metrics(quality)  # type: ignore[arg-type]
        return self.regression.metrics(quality)  # type: ignore[arg-type]

    def quality_metrics(self, quality: Quality) -> dict[str, float]:
        """The label-based metrics of a window's ``quality`` state (reference bands)."""
        return self._metrics(quality)

    def _count(self, quality: Quality) -> int:
        if self.classification:
            return ClassificationKpi.count(quality)  # type: ignore[arg-type]
        return RegressionKpi.count(quality)  # type: ignore[arg-type]

    def report(
        self,
        state: WindowState,
        calibration: cbpe.Calibration | None = None,
        *,
        no_calibration: str = NO_CALIBRATION,
        bands: tuple[ReferenceBandsInfo | None, PerformanceBands | None] = (None, None),
    ) -> KpiResult:
        """The window's verdict. ``calibration``: the model version's (from its reference
        profile), for the estimated metrics; ``no_calibration``: the note when it is None;
        ``bands``: whether the version's reference bands apply, and they
        (``streams.kpi.bands.setting``)."""
        p = self.policy
        n = state["serving"]["n"]
        labeled = self._count(state["quality"])
        metrics = {**self.serving.metrics(state["serving"]), **self._metrics(state["quality"])}
        metrics["unlabeled_expired"] = float(state["expired"])
        notes: list[str] = []
        if state["unusable_labels"]:
            notes.append(f"{state['unusable_labels']} labels or predictions were missing or "
                         "not numbers and could not be judged")
        segments: dict[str, dict[str, dict[str, float]]] = {}
        disparity: dict[str, dict[str, float]] = {}
        for key, values in state["segments"].items():
            segments[key] = {name: self._metrics(q, coarse=True) for name, q in values.items()}
            counts = {name: self._count(q) for name, q in values.items()}
            gaps = segment_disparity(segments[key], counts, min_count=p.min_segment_labeled)
            disparity[key] = {metric: d["gap"] for metric, d in gaps.items()}
            for metric, d in gaps.items():
                if metric in ("accuracy", "recall", "precision", "f1", "mae") and d["gap"] > 0:
                    notes.append(
                        f"{key}: {metric} ranges from {d['min']:.3g} ({d['min_segment']}) "
                        f"to {d['max']:.3g} ({d['max_segment']})")
        judged_bounds = judge(p, metrics, labeled, state["quality"], *bands)
        breaches = judged_bounds.breaches
        notes.extend(judged_bounds.notes)
        estimated, judged = self._estimate(state, calibration, no_calibration, notes)
        estimated_breaches = self._judge_estimates(estimated, judged, metrics, labeled, notes)
        on_estimates = bool(estimated_breaches) and not breaches
        breaches.extend(estimated_breaches)
        if on_estimates:
            notes.append("the verdict rests on estimates from scores: the labels cannot judge "
                         "these targets yet (an estimate cannot see concept drift)")
        concept = state["concept_drift"] > 0
        if concept:
            notes.append(f"the {p.concept_detector} detector on the error stream fired "
                         f"{state['concept_drift']} time(s) on labels of this window's predictions")
        status: KpiStatus = "breach" if breaches else "warn" if concept else "ok"
        return KpiResult(
            n_predictions=n, n_labeled=labeled, metrics=metrics, concept_drift=concept,
            status=status, breaches=breaches, segments=segments, disparity=disparity,
            notes=notes, estimated_metrics=estimated, estimated=on_estimates,
            thresholds=judged_bounds.thresholds, bands=bands[0],
        )

    def _estimate(
        self, state: WindowState, calibration: cbpe.Calibration | None, no_calibration: str,
        notes: list[str],
    ) -> tuple[dict[str, cbpe.Estimate], int]:
        """The estimated metrics and the scored predictions they rest on; a note when none."""
        if not self.classification:
            notes.append(NO_REGRESSION_ESTIMATE)
            return {}, 0
        histogram = state.get("scores")
        if histogram is None:
            notes.append("no performance estimate before labels: this window was opened "
                         "before driftline counted scores for it")
            return {}, 0
        if calibration is None:
            notes.append(no_calibration)
            return {}, 0
        scored = cbpe.scored(histogram)
        if not scored:
            notes.append("no performance estimate before labels: no prediction of this window "
                         "carried a score in [0, 1] and a usable predicted class")
            return {}, 0
        return cbpe.estimate(self.quality, histogram, calibration), scored

    def _judge_estimates(
        self, estimated: dict[str, cbpe.Estimate], scored: int, metrics: dict[str, float],
        labeled: int, notes: list[str],
    ) -> list[str]:
        """Estimated targets missed, in words. A metric the labels can judge (enough labels,
        defined) is judged on them only: labels overrule estimates."""
        p = self.policy
        out: list[str] = []
        waiting: list[str] = []
        for name, target in sorted(p.estimated_targets.items()):
            est = estimated.get(name)
            if labeled >= p.min_labeled and name in metrics:
                continue
            if est is None or scored < p.min_estimated:
                waiting.append(name)
                continue
            value = est["value"]
            band = f"(95 % band {est['lower']:.4g} to {est['upper']:.4g}, from scores)"
            if target.min is not None and value < target.min:
                out.append(f"estimated {name} {value:.4g} {band} is below its estimated "
                           f"target {target.min:g}")
            if target.max is not None and value > target.max:
                out.append(f"estimated {name} {value:.4g} {band} is above its estimated "
                           f"target {target.max:g}")
        if waiting:
            notes.append(f"estimated targets not judged ({scored} scored predictions of "
                         f"{p.min_estimated} needed, or no estimate): {', '.join(waiting)}")
        return out


_PREDICTION = itemgetter("p")


def _score(value: Any) -> float:
    """A score as a float; NaN when there is none or it is not a number."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return float("nan")
    return float(value)


def _array(values: list[Any]) -> list[Any] | npt.NDArray[Any]:
    """Numbers (or bools) as one numpy array, for the vectorised 0/1 mapping; else as is."""
    kinds = set(map(type, values))  # at C speed
    if kinds <= {int, float} or kinds == {bool}:
        return np.asarray(values)
    return values


def _number(value: Any) -> float:
    if isinstance(value, bool) or value is None:
        return float("nan")
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
