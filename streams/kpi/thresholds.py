"""Which bounds a window's metrics are held to, whether each could be judged, and the misses.

Two kinds of bound, side by side (a metric may have both; missing either is a
breach, named with its source):

* ``target``: the policy's fixed ``kpi.targets``;
* ``reference``: the band from the spread of the reference's own windows
  (``kpi.reference_bands``, ``streams.kpi.bands``).

A label-based bound is judged once the window has ``min_labeled`` labels. Precision,
recall and F1 also need ``min_positives`` (30) predicted, actual or both positives:
with 7 predicted positives one more false positive moves precision by 0.02 to 0.1, so
a window of a rare-positive model breaches a precision target by chance. A serious
alternative is an interval (Wilson) and a breach only when the whole interval is
beyond the bound; the count was chosen because it says in one line why a window was
not judged ("precision: 7 predicted positives, fewer than 30"), it applies the same
way to F1 (which has no closed-form interval) and to the reference bands, and the
bands already widen with fewer labels (docs/kpi.md). Estimated targets
(``streams.kpi.estimate``) keep ``min_estimated``: their band is an interval.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.policy import KpiPolicy
from schemas.reference import PerformanceBands
from schemas.reports import KpiThreshold, ReferenceBandsInfo
from streams.kpi.bands import MIN_WINDOWS, band, few_positives

#: Metrics read from predictions alone: judged without waiting for labels.
SERVING_METRICS = frozenset(
    {"error_rate", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms"}
)


@dataclass
class Judged:
    breaches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    thresholds: dict[str, list[KpiThreshold]] = field(default_factory=dict)


def judge(
    policy: KpiPolicy,
    metrics: Mapping[str, float],
    labeled: int,
    quality: Mapping[str, Any],
    bands_info: ReferenceBandsInfo | None = None,
    bands: PerformanceBands | None = None,
) -> Judged:
    """Every target and (applied) reference band of the window, judged where it can be.

    >>> from schemas.policy import Target
    >>> p = KpiPolicy(targets={"precision": Target(min=0.5)})
    >>> j = judge(p, {"precision": 0.2}, 500, {"tp": 1, "fp": 4, "tn": 480, "fn": 15})
    >>> j.breaches, j.notes
    ([], ['not judged: precision on 5 predicted positives, fewer than 30 (kpi.min_positives)'])
    """
    out = Judged()
    banded = (
        set(policy.reference_bands.metrics)
        if policy.reference_bands is not None and bands is not None
        else set()
    )
    skipped: list[str] = []
    scarce: list[str] = []
    no_band: list[str] = []
    positives = few_positives(quality, policy.min_positives)
    for name in sorted(set(policy.targets) | banded):
        value = metrics.get(name)
        judged = True
        if value is None or (name not in SERVING_METRICS and labeled < policy.min_labeled):
            skipped.append(name)
            judged = False
        elif name in positives:
            scarce.append(f"{name} on {positives[name]}")
            judged = False
        bounds: list[KpiThreshold] = []
        target = policy.targets.get(name)
        if target is not None:
            bounds.append(KpiThreshold(source="target", lower=target.min, upper=target.max,
                                       judged=judged))
        if name in banded:
            assert bands is not None
            held = band(policy, bands, name, labeled)
            if held is None:
                no_band.append(name)
            else:
                bounds.append(held.model_copy(update={"judged": judged}))
        for i, bound in enumerate(bounds):
            if not judged or value is None:
                continue
            missed = []
            for side, limit in (("below", bound.lower), ("above", bound.upper)):
                if limit is None or (value >= limit if side == "below" else value <= limit):
                    continue
                if bound.source == "target":
                    missed.append(f"{name} {value:.4g} is {side} its target {limit:g}")
                else:
                    missed.append(f"{name} {value:.4g} is {side} its reference band "
                                  f"{limit:.4g} ({bound.detail})")
            if missed:
                bounds[i] = bound.model_copy(update={"breached": True})
                out.breaches.extend(missed)
        if bounds:
            out.thresholds[name] = bounds
    if skipped:
        out.notes.append(f"not judged yet ({labeled} labels of {policy.min_labeled} needed, or "
                         f"undefined): {', '.join(skipped)}")
    if scarce:
        out.notes.append(f"not judged: {', '.join(scarce)}, fewer than {policy.min_positives} "
                         "(kpi.min_positives)")
    if no_band:
        out.notes.append(f"no reference band for {', '.join(no_band)}: defined on fewer than "
                         f"{MIN_WINDOWS} reference windows (or too few positives there)")
    if bands_info is not None and not bands_info.applied:
        out.notes.append(f"reference bands not applied: {bands_info.reason}")
    return out
