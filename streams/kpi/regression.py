"""Regression KPIs over a window from running sums: exact, mergeable, five numbers.

``mae`` = mean |y - yhat|, ``rmse`` = sqrt(mean (y - yhat)^2) and ``mape`` =
mean |y - yhat| / max(|y|, eps), all as sklearn.metrics computes them.

MAPE and a true value of zero: like sklearn's ``mean_absolute_percentage_error``
the denominator is ``max(|y|, eps)`` with ``eps`` the float64 machine epsilon
(2.2e-16), so one zero target with any error makes the MAPE astronomically
large (|error| / 2.2e-16). That is sklearn's behaviour, kept on purpose so that
the two agree; a target that is often zero wants MAE instead. MAPE is a
fraction (0.05 = 5 %), not a percentage, also as in sklearn.

Pairs where either value is NaN or infinite, or whose squared or percentage
error overflows float64 (JSON has no infinity), are not folded in; they are
counted in ``invalid`` (the caller decides whether that is worth a dead letter).

State (JSON-able, under 300 bytes however many events)::

    {"n": int, "invalid": int, "abs_sum": [float], "sq_sum": [float], "ape_sum": [float]}

The sums are kept exactly (:mod:`streams.summaries.exact_sum`, a float or two
each; a plain float in states written before), so the metrics are the same, bit
for bit, whatever order and batches the labels came in.

With no valid pair every metric is left out of :meth:`RegressionKpi.metrics`
(never NaN).
"""

from __future__ import annotations

import math
from typing import TypedDict

import numpy as np
import numpy.typing as npt

from streams.summaries import exact_sum
from streams.summaries.exact_sum import ExactSum

_EPS = float(np.finfo(np.float64).eps)


class RegressionState(TypedDict):
    n: int
    invalid: int
    abs_sum: ExactSum
    sq_sum: ExactSum
    ape_sum: ExactSum


class RegressionKpi:
    """Fold over :class:`RegressionState`.

    >>> kpi = RegressionKpi()
    >>> st = kpi.update(kpi.initialize(), np.array([1.0, 2.0, 4.0]), np.array([1.5, 2.0, 3.0]))
    >>> kpi.metrics(st)
    {'mae': 0.5, 'rmse': 0.6454972243679028, 'mape': 0.25}
    >>> kpi.metrics(kpi.initialize())
    {}
    """

    @staticmethod
    def initialize() -> RegressionState:
        return {"n": 0, "invalid": 0, "abs_sum": [], "sq_sum": [], "ape_sum": []}

    @staticmethod
    def update(
        state: RegressionState, y_true: npt.ArrayLike, y_pred: npt.ArrayLike
    ) -> RegressionState:
        """Add one batch of (true, predicted) pairs."""
        t = np.asarray(y_true, dtype=np.float64)
        p = np.asarray(y_pred, dtype=np.float64)
        if t.ndim != 1 or t.shape != p.shape:
            raise ValueError(f"y_true and y_pred must be 1-D of one length ({t.shape}, {p.shape})")
        with np.errstate(over="ignore", invalid="ignore"):
            err = np.abs(p - t)
            sq = np.square(err)
            ape = err / np.maximum(np.abs(t), _EPS)
        ok = np.isfinite(sq) & np.isfinite(ape)  # NaN or inf in, or overflow: not folded in
        n = int(np.count_nonzero(ok))
        return {
            "n": state["n"] + n,
            "invalid": state["invalid"] + int(ok.size - n),
            "abs_sum": exact_sum.add(state["abs_sum"], err[ok]),
            "sq_sum": exact_sum.add(state["sq_sum"], sq[ok]),
            "ape_sum": exact_sum.add(state["ape_sum"], ape[ok]),
        }

    @staticmethod
    def merge(a: RegressionState, b: RegressionState) -> RegressionState:
        return {
            "n": a["n"] + b["n"],
            "invalid": a["invalid"] + b["invalid"],
            "abs_sum": exact_sum.merge(a["abs_sum"], b["abs_sum"]),
            "sq_sum": exact_sum.merge(a["sq_sum"], b["sq_sum"]),
            "ape_sum": exact_sum.merge(a["ape_sum"], b["ape_sum"]),
        }

    @staticmethod
    def count(state: RegressionState) -> int:
        return state["n"]

    @staticmethod
    def metrics(state: RegressionState) -> dict[str, float]:
        n = state["n"]
        if not n:
            return {}
        return {
            "mae": exact_sum.value(state["abs_sum"]) / n,
            "rmse": math.sqrt(exact_sum.value(state["sq_sum"]) / n),
            "mape": exact_sum.value(state["ape_sum"]) / n,
        }
