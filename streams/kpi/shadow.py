"""A shadow against the served version, on the same request ids, per KPI window.

A shadow answers the champion's requests unserved (``driftline command shadow``).
The label join pairs the two predictions of a request (``streams.join``, lanes):
on arrival, whichever comes second (``JoinOutcome.arrivals``), and again when
the request's label completes both (``JoinOutcome.pairs``). This module folds
those pairs into one small state per shadow window (the window of the shadow's
prediction), one entry per served version, and turns it into
``schemas.reports.ShadowComparison``:

* **agreement** (classification): the share of pairs with the same predicted
  class, one-vs-rest on ``kpi.positive_label`` as every binary KPI; for
  regression the **mean absolute difference** of the two predictions instead;
* **score drift**: mean and largest ``|shadow score - served score|`` and the
  mean signed difference (a systematic shift), over pairs where both scored.
  Chosen over a KS or PSI between the two score distributions because the
  scores are *paired*: two versions can have the same score distribution and
  still disagree on every request; the paired differences see that, cost
  three numbers, and are exact (no bins, no sample);
* once labels come, **both versions' realized metrics on the same labeled
  pairs**: accuracy and errors (classification) or mae (regression). On the
  same requests, so the two numbers differ only by the versions.

Pure, and JSON-able: the KPI agent stores the state under
``h|model|version|start`` beside the window's accumulators and drops it with
the window; a replay folds the same pairs in the same order. Bounds: 11
numbers per served version, at most ``MAX_VERSIONS`` served versions per
shadow window (pairs with further ones are counted in ``other``); no pair is
waited for here: the pending ones are the join's pending predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NotRequired, TypedDict

from schemas.policy import KpiPolicy
from schemas.reports import ShadowComparison
from streams.kpi.labels import MISSING, to_binary

#: served versions compared per shadow window (one normally; two across a promotion)
MAX_VERSIONS = 8


class PairStats(TypedDict):
    n: int  # pairs met on arrival
    judged: int  # of them, both predictions readable
    same: float  # classification: same class; regression: sum of |prediction difference|
    scored: int  # pairs where both scored
    sdiff: float  # sum |score difference|
    smax: float  # largest |score difference|
    sbias: float  # sum (shadow score - served score)
    labeled: int  # labeled pairs, both predictions and the label readable
    served_err: float  # served version's errors (0/1) or absolute errors on them
    shadow_err: float  # the shadow's


class ShadowState(TypedDict):
    versions: dict[str, PairStats]  # served version -> its pairs with the shadow
    other: NotRequired[int]  # pairs with served versions beyond MAX_VERSIONS


def initialize() -> ShadowState:
    return {"versions": {}}


def _new() -> PairStats:
    return {
        "n": 0,
        "judged": 0,
        "same": 0.0,
        "scored": 0,
        "sdiff": 0.0,
        "smax": 0.0,
        "sbias": 0.0,
        "labeled": 0,
        "served_err": 0.0,
        "shadow_err": 0.0,
    }


def _stats(state: ShadowState, version: str) -> PairStats | None:
    versions = state["versions"]
    if version not in versions:
        if len(versions) >= MAX_VERSIONS:
            state["other"] = state.get("other", 0) + 1
            return None
        versions[version] = _new()
    return versions[version]


def _score(value: Any) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if f == f else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if f == f else None


def add_arrivals(
    state: ShadowState,
    pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]],
    policy: KpiPolicy,
) -> ShadowState:
    """Fold ``(served, shadow)`` waiting predictions (``streams.kpi.window.Waiting``:
    ``v`` version, ``p`` prediction, ``s`` score) of requests met on arrival.

    >>> p = KpiPolicy()
    >>> s = add_arrivals(initialize(), [({"v": "v1", "p": 1, "s": 0.9}, {"v": "v2", "p": 1,
    ...     "s": 0.7}), ({"v": "v1", "p": 0, "s": 0.2}, {"v": "v2", "p": 1, "s": 0.6})], p)
    >>> c = report(s, p)[0]
    >>> (c.versus, c.pairs, c.agreement, round(c.score_mean_abs_diff, 3),
    ...  round(c.score_max_abs_diff, 3))
    ('v1', 2, 0.5, 0.3, 0.4)
    """
    classification = policy.task == "classification"
    if classification and pairs:
        served_codes = to_binary([a.get("p") for a, _ in pairs], policy.positive_label).tolist()
        shadow_codes = to_binary([b.get("p") for _, b in pairs], policy.positive_label).tolist()
    for i, (served, shadow) in enumerate(pairs):
        stats = _stats(state, str(served["v"]))
        if stats is None:
            continue
        stats["n"] += 1
        if classification:
            a, b = served_codes[i], shadow_codes[i]
            if a != MISSING and b != MISSING:
                stats["judged"] += 1
                stats["same"] += float(a == b)
        else:
            x, y = _number(served.get("p")), _number(shadow.get("p"))
            if x is not None and y is not None:
                stats["judged"] += 1
                stats["same"] += abs(y - x)
        sa, sb = _score(served.get("s")), _score(shadow.get("s"))
        if sa is not None and sb is not None:
            d = sb - sa
            stats["scored"] += 1
            stats["sdiff"] += abs(d)
            stats["smax"] = max(stats["smax"], abs(d))
            stats["sbias"] += d
    return state


def add_labeled(
    state: ShadowState,
    versions: Sequence[str],
    served_errors: Sequence[float],
    shadow_errors: Sequence[float],
) -> ShadowState:
    """Fold labeled pairs: per pair the served version and both versions' errors (0/1
    misses, or absolute errors: ``streams.kpi.concept``); NaN (unreadable) is skipped."""
    for version, a, b in zip(versions, served_errors, shadow_errors, strict=True):
        if a != a or b != b:
            continue
        stats = _stats(state, version)
        if stats is None:
            continue
        stats["labeled"] += 1
        stats["served_err"] += float(a)
        stats["shadow_err"] += float(b)
    return state


def _metrics(errors: float, n: int, classification: bool) -> dict[str, float]:
    if not n:
        return {}
    if classification:
        return {"accuracy": 1.0 - errors / n, "errors": errors}
    return {"mae": errors / n}


def report(state: ShadowState, policy: KpiPolicy) -> list[ShadowComparison]:
    """One comparison per served version, by version name."""
    classification = policy.task == "classification"
    out = []
    for version in sorted(state["versions"]):
        s = state["versions"][version]
        judged, scored, labeled = s["judged"], s["scored"], s["labeled"]
        mean = s["same"] / judged if judged else None
        out.append(
            ShadowComparison(
                versus=version,
                pairs=s["n"],
                agreement=mean if classification else None,
                prediction_mean_abs_diff=None if classification else mean,
                scored_pairs=scored,
                score_mean_abs_diff=s["sdiff"] / scored if scored else None,
                score_max_abs_diff=s["smax"] if scored else None,
                score_mean_diff=s["sbias"] / scored if scored else None,
                labeled_pairs=labeled,
                served_metrics=_metrics(s["served_err"], labeled, classification),
                shadow_metrics=_metrics(s["shadow_err"], labeled, classification),
            )
        )
    return out
