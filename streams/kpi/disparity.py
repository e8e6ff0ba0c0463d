"""Segment disparity: how far apart a metric is across the values of one segment.

Input is what the KPI accumulators already give, one metrics dict per segment
value (``{"DE": {"recall": 0.8, ...}, "FR": {...}}``), and how many events each
segment's metrics rest on. Only segments with at least ``min_count`` events are
compared: a segment of five events has a recall of 0, 0.2, ... by chance alone,
and would make every gap look alarming.

For each metric present in at least two eligible segments the result gives the
gap ``max - min`` and the two extreme segments. Ties go to the segment whose
name sorts first, so the result is deterministic. A metric defined in fewer
than two eligible segments is left out (there is no gap to speak of); NaN or
infinite values, which the accumulators never produce, are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TypedDict


class Disparity(TypedDict):
    gap: float  # max - min
    min: float
    max: float
    min_segment: str
    max_segment: str
    segments: int  # eligible segments that define the metric


def segment_disparity(
    metrics: Mapping[str, Mapping[str, float]],
    counts: Mapping[str, int],
    *,
    min_count: int,
) -> dict[str, Disparity]:
    """Per metric, the gap between the best and worst segment with ``min_count`` events.

    A segment missing from ``counts`` counts as having no events.

    >>> m = {"DE": {"recall": 0.8, "accuracy": 0.9}, "FR": {"recall": 0.6},
    ...      "IT": {"recall": 0.1}}
    >>> d = segment_disparity(m, {"DE": 500, "FR": 400, "IT": 3}, min_count=100)
    >>> d["recall"]["gap"], d["recall"]["max_segment"], d["recall"]["min_segment"]
    (0.20000000000000007, 'DE', 'FR')
    >>> sorted(d)  # accuracy is defined for one eligible segment only
    ['recall']
    """
    if min_count < 0:
        raise ValueError("min_count must not be negative")
    eligible = sorted(s for s in metrics if counts.get(s, 0) >= min_count)
    names = sorted({name for s in eligible for name in metrics[s]})
    out: dict[str, Disparity] = {}
    for name in names:
        values = [
            (float(metrics[s][name]), s)
            for s in eligible
            if name in metrics[s] and math.isfinite(metrics[s][name])
        ]
        if len(values) < 2:
            continue
        lo = min(values, key=lambda vs: vs[0])  # min and max keep the first of equals,
        hi = max(values, key=lambda vs: vs[0])  # and eligible is sorted
        out[name] = {
            "gap": hi[0] - lo[0],
            "min": lo[0],
            "max": hi[0],
            "min_segment": lo[1],
            "max_segment": hi[1],
            "segments": len(values),
        }
    return out
