"""Business KPI from a cost matrix: what the model's decisions were worth.

A cost matrix gives a value per labeled event for each outcome, ``"tp"``,
``"fp"``, ``"tn"`` and ``"fn"`` (an outcome left out is worth 0). For a fraud
model, ``{"fn": -120.0, "fp": -5.0, "tp": 100.0}`` says a missed fraud loses
120, a blocked good customer costs 5 in friction, a caught fraud saves 100.

The value depends only on the confusion counts, so it needs no state of its
own: it is read from a :class:`~streams.kpi.classification.ClassificationState`
(pass ``costs=`` to ``ClassificationKpi``), exact and mergeable like the counts.

* ``business_value``: the total, ``sum(count[o] * value[o])``; 0.0 when no event
  was labeled (a sum over nothing is defined).
* ``business_value_per_prediction``: the total over the labeled events (the
  predictions whose outcome is known); left out when there are none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

OUTCOMES = ("tp", "fp", "tn", "fn")


def check_costs(costs: Mapping[str, float]) -> dict[str, float]:
    """The cost matrix with every outcome present (missing ones 0.0), validated.

    >>> check_costs({"fn": -120})
    {'tp': 0.0, 'fp': 0.0, 'tn': 0.0, 'fn': -120.0}
    """
    unknown = sorted(set(costs) - set(OUTCOMES))
    if unknown:
        raise ValueError(f"unknown outcomes {unknown} in the cost matrix; use {list(OUTCOMES)}")
    out = {o: float(costs.get(o, 0.0)) for o in OUTCOMES}
    bad = [o for o, v in out.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"cost matrix values must be finite numbers ({bad})")
    return out


def business_metrics(counts: Mapping[str, int], costs: Mapping[str, float]) -> dict[str, float]:
    """``business_value`` and, with at least one event, ``business_value_per_prediction``.

    >>> business_metrics({"tp": 3, "fp": 10, "tn": 80, "fn": 2}, {"tp": 100, "fp": -5, "fn": -120})
    {'business_value': 10.0, 'business_value_per_prediction': 0.10526315789473684}
    >>> business_metrics({"tp": 0, "fp": 0, "tn": 0, "fn": 0}, {"fn": -1})
    {'business_value': 0.0}
    """
    full = check_costs(costs)
    total = math.fsum(counts[o] * full[o] for o in OUTCOMES)
    n = sum(counts[o] for o in OUTCOMES)
    out = {"business_value": total}
    if n:
        out["business_value_per_prediction"] = total / n
    return out
