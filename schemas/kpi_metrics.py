"""The KPI metrics a KpiReport can carry: what a policy's ``kpi.targets`` may name.

Each metric has the task that computes it and the range of its values, so a
target that can never be judged (an unknown name, a metric of the other task,
``business_value`` without a cost matrix) or never be met or missed (a bound
outside the range, e.g. ``roc_auc: {min: 7.5}``) is refused when the policy is
read. ``streams.kpi`` computes them (tests/schemas/test_policy_targets.py checks
that this table and the kernels name the same metrics).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Literal

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class Metric:
    """A KPI metric: which tasks compute it, and the range of its values."""

    tasks: frozenset[Task]
    lo: float = -math.inf
    hi: float = math.inf
    needs_cost: bool = False


_BOTH: frozenset[Task] = frozenset({"classification", "regression"})
_CLASSIFICATION: frozenset[Task] = frozenset({"classification"})
_REGRESSION: frozenset[Task] = frozenset({"regression"})


def _share(tasks: frozenset[Task]) -> Metric:
    """A share or a probability: 0 to 1."""
    return Metric(tasks, lo=0.0, hi=1.0)


def _positive(tasks: frozenset[Task]) -> Metric:
    """A count, a duration or an error: at least 0."""
    return Metric(tasks, lo=0.0)


METRICS: dict[str, Metric] = {
    # serving health, from the predictions alone (streams.kpi.serving)
    "error_rate": _share(_BOTH),
    "label_coverage": _share(_BOTH),
    "latency_p50_ms": _positive(_BOTH),
    "latency_p95_ms": _positive(_BOTH),
    "latency_p99_ms": _positive(_BOTH),
    "label_delay_p50_s": _positive(_BOTH),
    "label_delay_p95_s": _positive(_BOTH),
    "unlabeled_expired": _positive(_BOTH),
    # binary classification (streams.kpi.classification)
    "accuracy": _share(_CLASSIFICATION),
    "positive_rate": _share(_CLASSIFICATION),
    "label_positive_rate": _share(_CLASSIFICATION),
    "precision": _share(_CLASSIFICATION),
    "recall": _share(_CLASSIFICATION),
    "f1": _share(_CLASSIFICATION),
    "roc_auc": _share(_CLASSIFICATION),
    "brier": _share(_CLASSIFICATION),
    "ece": _share(_CLASSIFICATION),
    "log_loss": _positive(_CLASSIFICATION),
    # the cost matrix's value (streams.kpi.business)
    "business_value": Metric(_CLASSIFICATION, needs_cost=True),
    "business_value_per_prediction": Metric(_CLASSIFICATION, needs_cost=True),
    # regression (streams.kpi.regression)
    "mae": _positive(_REGRESSION),
    "rmse": _positive(_REGRESSION),
    "mape": _positive(_REGRESSION),
}


def target_problem(
    name: str, *, lo: float | None, hi: float | None, task: Task, cost: bool
) -> str | None:
    """Why a target ``{min: lo, max: hi}`` on ``name`` could never be judged, or None.

    >>> target_problem("rocauc", lo=0.8, hi=None, task="classification", cost=False)
    "unknown KPI metric 'rocauc' (did you mean 'roc_auc'?); the known ones: error_rate, ..."
    >>> target_problem("roc_auc", lo=7.5, hi=None, task="classification", cost=False)
    'min 7.5 is outside the range of roc_auc, 0 to 1'
    >>> target_problem("roc_auc", lo=0.8, hi=None, task="classification", cost=False) is None
    True
    """
    metric = METRICS.get(name)
    if metric is None:
        known = ", ".join(METRICS)
        return f"unknown KPI metric {name!r}{_did_you_mean(name)}; the known ones: {known}"
    if task not in metric.tasks:
        return f"{name} is not computed for task {task}"
    if metric.needs_cost and not cost:
        return f"{name} is only computed with a cost matrix (kpi.cost)"
    for bound, value in (("min", lo), ("max", hi)):
        if value is not None and not metric.lo <= value <= metric.hi:
            return f"{bound} {value:g} is outside the range of {name}, {_range(metric)}"
    return None


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, METRICS, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _range(metric: Metric) -> str:
    if math.isinf(metric.hi):
        return f"at least {metric.lo:g}"
    return f"{metric.lo:g} to {metric.hi:g}"


#: Metrics estimated from scores before labels come (streams.kpi.estimate, CBPE):
#: binary classification only.
ESTIMATED_METRICS = ("roc_auc", "accuracy", "precision", "recall", "f1", "label_positive_rate")


def estimated_target_problem(
    name: str, *, lo: float | None, hi: float | None, task: Task
) -> str | None:
    """Why an estimated target (``kpi.estimated_targets``) could never be judged, or None.

    >>> estimated_target_problem("log_loss", lo=None, hi=0.5, task="classification")
    'log_loss is not estimated from scores; estimated: roc_auc, accuracy, precision, recall, \
f1, label_positive_rate'
    >>> estimated_target_problem("roc_auc", lo=0.8, hi=None, task="regression")
    'nothing is estimated for task regression (only binary classification has class probabilities)'
    """
    if task != "classification":
        return (
            f"nothing is estimated for task {task} (only binary classification has class "
            "probabilities)"
        )
    if name not in ESTIMATED_METRICS:
        return f"{name} is not estimated from scores; estimated: {', '.join(ESTIMATED_METRICS)}"
    return target_problem(name, lo=lo, hi=hi, task=task, cost=False)


#: Metrics a reference band (``kpi.reference_bands``) may be drawn for: the label-based
#: metrics whose value does not grow with a window's size (``business_value`` is a sum;
#: serving health and label delay are not in a reference file).
BANDED_METRICS = (
    "accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier", "ece",
    "positive_rate", "label_positive_rate", "business_value_per_prediction",
    "mae", "rmse", "mape",
)
#: Which way a metric gets worse (a band judged on the worse side only, by default):
#: ``low`` for a score, ``high`` for an error; a rate with no better side is absent.
WORSE: dict[str, Literal["low", "high"]] = {
    "accuracy": "low", "precision": "low", "recall": "low", "f1": "low", "roc_auc": "low",
    "business_value_per_prediction": "low",
    "log_loss": "high", "brier": "high", "ece": "high", "mae": "high", "rmse": "high",
    "mape": "high",
}


def band_problem(name: str, *, task: Task, cost: bool) -> str | None:
    """Why a reference band on ``name`` could never be judged, or None.

    >>> band_problem("latency_p99_ms", task="classification", cost=False)
    'latency_p99_ms has no reference band (a reference file has no serving health); banded: \
accuracy, precision, recall, f1, roc_auc, log_loss, brier, ece, positive_rate, \
label_positive_rate, business_value_per_prediction, mae, rmse, mape'
    """
    problem = target_problem(name, lo=None, hi=None, task=task, cost=cost)
    if problem is not None:
        return problem
    if name not in BANDED_METRICS:
        why = (
            "a window's sum" if name == "business_value"
            else "a reference file has no serving health"
        )
        return f"{name} has no reference band ({why}); banded: {', '.join(BANDED_METRICS)}"
    return None
