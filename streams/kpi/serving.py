"""Serving health over a window: error rate, latency quantiles, label coverage and delay.

Fed from prediction events, labeled or not (:meth:`ServingHealth.update`), and
from labels as they join their prediction (:meth:`ServingHealth.update_labels`).

* ``error_rate``: share of calls with ``error`` true.
* ``latency_p50_ms``, ``latency_p95_ms``, ``latency_p99_ms``: from a
  :class:`~streams.summaries.log_histogram.LogHistogram` anchored at 0 over the
  events that carried ``latency_ms`` (NaN = not carried, counted in
  ``latency_missing``).
* ``label_coverage``: labels joined / predictions in the window.
* ``label_delay_p50_s``, ``label_delay_p95_s``: seconds from the prediction's
  ``ts`` to the label's, from a second LogHistogram (a negative delay, from
  clock skew between producers, is kept as negative).

Quantile accuracy: each quantile ``r`` is the order statistic ``x_(floor(r n))``
(0-based; ``np.quantile(x, r, method="inverted_cdf")`` when ``r n`` is not an
integer) to within 1 % of its value (DDSketch's relative accuracy); values
within 1e-9 of zero read as 0. If a histogram ever needs more than
``max_buckets`` buckets (1,024 of them span 9 orders of magnitude, e.g. 1 µs
to 1,000 s) its *lowest* buckets merge, so the upper quantiles reported here
keep their accuracy.

A metric with nothing to read from (no predictions, no latencies, no labels) is
left out of :meth:`ServingHealth.metrics`, never NaN.

State (JSON-able)::

    {"n": int, "errors": int, "latency_missing": int, "labeled": int,
     "latency": LogHistogramState, "delay": LogHistogramState}

Size: at most ``2 * max_buckets`` (key, count) pairs whatever the traffic:
under 40 KB of JSON in the worst case for the default 1,024 (every bucket used,
counts up to 10 digits), and about 9 KB after a million events with lognormal
latencies and exponential label delays (asserted < 12,000 bytes in the tests).
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np
import numpy.typing as npt

from streams.summaries.log_histogram import LogHistogram, LogHistogramState

LATENCY_RANKS = {"latency_p50_ms": 0.5, "latency_p95_ms": 0.95, "latency_p99_ms": 0.99}
DELAY_RANKS = {"label_delay_p50_s": 0.5, "label_delay_p95_s": 0.95}


class ServingState(TypedDict):
    n: int
    errors: int
    latency_missing: int
    labeled: int
    latency: LogHistogramState
    delay: LogHistogramState


class ServingHealth:
    """Fold over :class:`ServingState`.

    >>> h = ServingHealth()
    >>> st = h.update(h.initialize(), np.array([False, True, False, False]),
    ...               np.array([10.0, np.nan, 20.0, 30.0]))
    >>> st = h.update_labels(st, np.array([60.0, 120.0]))
    >>> m = h.metrics(st)
    >>> m["error_rate"], m["label_coverage"], round(m["latency_p50_ms"])
    (0.25, 0.5, 20)
    """

    MAX_BUCKETS = 1024

    def __init__(self, *, max_buckets: int = MAX_BUCKETS) -> None:
        self.histogram = LogHistogram(max_buckets=max_buckets)

    def initialize(self) -> ServingState:
        return {
            "n": 0,
            "errors": 0,
            "latency_missing": 0,
            "labeled": 0,
            "latency": self.histogram.initialize(0.0),
            "delay": self.histogram.initialize(0.0),
        }

    def update(
        self,
        state: ServingState,
        error: npt.ArrayLike,
        latency_ms: npt.ArrayLike | None = None,
    ) -> ServingState:
        """Add one batch of predictions: ``error`` flags (bool or 0/1), latencies (NaN = none)."""
        err = np.asarray(error)
        if err.ndim != 1 or err.dtype.kind not in "biuf":
            raise ValueError("error must be a 1-D array of booleans")
        lat = (
            np.full(err.shape, np.nan)
            if latency_ms is None
            else np.asarray(latency_ms, dtype=np.float64)
        )
        if lat.shape != err.shape:
            raise ValueError(f"error and latency_ms differ in length ({err.size} vs {lat.size})")
        finite = lat[np.isfinite(lat)]
        return {
            **state,
            "n": state["n"] + int(err.size),
            "errors": state["errors"] + int(np.count_nonzero(err)),
            "latency_missing": state["latency_missing"] + int(err.size - finite.size),
            "latency": self.histogram.update(state["latency"], finite),
        }

    def update_labels(self, state: ServingState, delay_s: npt.ArrayLike) -> ServingState:
        """Add labels joined to this window's predictions; ``delay_s`` NaN = delay unknown."""
        delay = np.asarray(delay_s, dtype=np.float64)
        if delay.ndim != 1:
            raise ValueError("delay_s must be one-dimensional")
        return {
            **state,
            "labeled": state["labeled"] + int(delay.size),
            "delay": self.histogram.update(state["delay"], delay[np.isfinite(delay)]),
        }

    def merge(self, a: ServingState, b: ServingState) -> ServingState:
        return {
            "n": a["n"] + b["n"],
            "errors": a["errors"] + b["errors"],
            "latency_missing": a["latency_missing"] + b["latency_missing"],
            "labeled": a["labeled"] + b["labeled"],
            "latency": self.histogram.merge(a["latency"], b["latency"]),
            "delay": self.histogram.merge(a["delay"], b["delay"]),
        }

    def metrics(self, state: ServingState) -> dict[str, float]:
        out: dict[str, float] = {}
        n = state["n"]
        if n:
            out["error_rate"] = state["errors"] / n
            out["label_coverage"] = state["labeled"] / n
        for hist, ranks in ((state["latency"], LATENCY_RANKS), (state["delay"], DELAY_RANKS)):
            if self.histogram.count(hist):
                values = self.histogram.quantiles(hist, np.asarray(list(ranks.values())))
                out.update(zip(ranks, values.tolist(), strict=True))
        return out
