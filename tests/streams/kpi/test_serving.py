"""Serving health (streams/kpi/serving.py): error rate, latency, label coverage and delay.

Ground truth is the raw data. Counts and rates are exact. Each quantile ``r`` must be
within ``QUANTILE_RTOL`` (1 %, LogHistogram's relative accuracy) of the order
statistic the sketch reads, ``sorted(x)[floor(r * n)]``. State size: < 12,000 bytes of
orjson after a million predictions and a million labels (measured 8,949).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import orjson
import pytest

from streams.kpi.serving import DELAY_RANKS, LATENCY_RANKS, ServingHealth, ServingState
from streams.summaries.log_histogram import LogHistogram

Floats = npt.NDArray[np.float64]
QUANTILE_RTOL = LogHistogram.RELATIVE_ACCURACY + 1e-12


def _order_statistic(x: Floats, r: float) -> float:
    xs = np.sort(x)
    return float(xs[min(math.floor(r * xs.size), xs.size - 1)])


def _traffic(seed: int, n: int) -> tuple[npt.NDArray[np.bool_], Floats, Floats]:
    rng = np.random.default_rng(seed)
    error = rng.random(n) < 0.02
    latency = rng.lognormal(np.log(25.0), 0.8, n)
    latency[rng.random(n) < 0.05] = np.nan  # events without latency_ms
    delay = rng.exponential(6 * 3600.0, n // 2)
    delay[:10] = -rng.random(10)  # clock skew: label stamped before its prediction
    return error, latency, delay


@pytest.mark.parametrize("seed", range(3))
def test_metrics_match_the_raw_data(seed: int) -> None:
    error, latency, delay = _traffic(seed, 50_000)
    h = ServingHealth()
    st = h.update_labels(h.update(h.initialize(), error, latency), delay)
    m = h.metrics(st)
    assert m["error_rate"] == pytest.approx(error.mean(), rel=1e-12)
    assert m["label_coverage"] == pytest.approx(delay.size / error.size, rel=1e-12)
    assert st["latency_missing"] == int(np.isnan(latency).sum())
    finite = latency[np.isfinite(latency)]
    for name, r in LATENCY_RANKS.items():
        truth = _order_statistic(finite, r)
        assert abs(m[name] - truth) <= QUANTILE_RTOL * abs(truth), name
    for name, r in DELAY_RANKS.items():
        truth = _order_statistic(delay, r)
        assert abs(m[name] - truth) <= QUANTILE_RTOL * abs(truth), name


def test_batches_fold_and_merge_to_the_same_state() -> None:
    error, latency, delay = _traffic(4, 30_000)
    h = ServingHealth()
    a, b = slice(0, 7_000), slice(7_000, None)
    da, db = slice(0, 5_000), slice(5_000, None)

    def fold(st: ServingState, part: slice, dpart: slice) -> ServingState:
        return h.update_labels(h.update(st, error[part], latency[part]), delay[dpart])

    sequential = fold(fold(h.initialize(), a, da), b, db)
    merged = h.merge(fold(h.initialize(), a, da), fold(h.initialize(), b, db))
    whole = fold(h.initialize(), slice(None), slice(None))
    assert sequential == whole
    assert merged == whole


def test_nothing_to_read_means_no_metric() -> None:
    h = ServingHealth()
    assert h.metrics(h.initialize()) == {}
    st = h.update(h.initialize(), np.array([True, False]))  # no latencies, no labels
    assert h.metrics(st) == {"error_rate": 0.5, "label_coverage": 0.0}
    st = h.update_labels(st, np.array([np.nan]))  # a label whose delay is unknown
    assert h.metrics(st) == {"error_rate": 0.5, "label_coverage": 0.5}


def test_bad_input_is_an_error() -> None:
    h = ServingHealth()
    with pytest.raises(ValueError, match="differ in length"):
        h.update(h.initialize(), np.array([False, True]), np.array([1.0]))
    with pytest.raises(ValueError, match="booleans"):
        h.update(h.initialize(), np.array(["no"]))


def test_state_size_is_bounded_after_a_million_events() -> None:
    h = ServingHealth()
    st = h.initialize()
    for seed in range(10):
        error, latency, delay = _traffic(seed, 100_000)
        st = h.update(st, error, latency)
        st = h.update_labels(st, np.concatenate([delay, delay]))
    assert st["n"] == st["labeled"] == 1_000_000
    assert len(orjson.dumps(st)) < 12_000
    assert len(st["latency"]["keys"]) <= ServingHealth.MAX_BUCKETS
