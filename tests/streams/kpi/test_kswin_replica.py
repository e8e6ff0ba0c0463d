"""KSWIN's tests, vectorised (streams/kpi/kswin_replica.py): the same statistics and
p-values as scipy, the same detections as river's KSWIN (``replay``), and the same
false-alarm rate with each update's sample drawn on its own (``statistics``)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from river.drift import KSWIN
from scipy import stats

from streams.kpi import kswin_replica as kr

Floats = npt.NDArray[np.float64]


def river_hits(xs: Floats, alpha: float, *, seed: int = 0) -> list[int]:
    det = KSWIN(alpha=alpha, window_size=300, stat_size=100, seed=seed)
    hits = []
    for i, x in enumerate(xs.tolist()):
        det.update(x)
        if det.drift_detected:
            hits.append(i)
    return hits


def test_counts_and_p_values_are_scipy_s() -> None:
    rng = np.random.default_rng(0)
    older = np.round(rng.exponential(size=(300, 100)), 1)  # many ties
    recent = np.round(rng.exponential(size=(300, 100)) * rng.uniform(0.8, 2.0, (300, 1)), 1)
    r = kr.ranks(np.concatenate([older, recent], axis=1)).reshape(300, 200)
    h = kr.counts_gap(r[:, :100], r[:, 100:])
    p = kr.p_values(100)
    for i in range(300):
        res = stats.ks_2samp(older[i], recent[i], method="auto")
        assert res.statistic == h[i] / 100 and res.pvalue == p[h[i]]
    assert len(set(h.tolist())) > 10  # a range of statistics, not one
    assert np.all(np.diff(p) <= 0)  # the p-value falls with the statistic: alpha is a threshold
    bits = (rng.random((50, 200)) < 0.3).astype(np.int32)  # 0/1: the gap of the counts of ones
    assert np.array_equal(
        kr.counts_gap(bits[:, :100], bits[:, 100:]),
        np.abs(bits[:, :100].sum(axis=1) - bits[:, 100:].sum(axis=1)),
    )


@pytest.mark.parametrize("kind", ["continuous", "zero_one"])
def test_replay_detects_where_river_s_kswin_does(kind: str) -> None:
    rng = np.random.default_rng(1)
    if kind == "continuous":  # rounded to cents: ties; the scale moves twice
        xs = np.round(np.abs(rng.standard_normal(1_800)) * np.repeat([1.0, 1.6, 1.0], 600), 2)
    else:
        xs = (rng.random(1_800) < np.repeat([0.1, 0.35, 0.1], 600)).astype(np.float64)
    hits = river_hits(xs, 0.05)
    assert len(hits) >= 2  # restarts included
    assert kr.replay(xs, alpha=0.05, window_size=300, stat_size=100, seed=0) == hits


def test_samples_per_update_give_river_s_false_alarm_rate() -> None:
    """``statistics`` draws each update's sample on its own instead of river's sequence
    restarted at each detection: other detections, the same rate. Over 100 windows of
    500 independent errors, at alphas where the rate is neither 0 nor 1, the share of
    windows with a detection is river's (``replay``, exact) within 0.1: two estimates
    over the same 100 windows, each with a binomial standard error of at most 0.05.
    Measured (3 seeds): differences of 0.00 to 0.07."""
    rng = np.random.default_rng(2)
    cases = {
        "continuous": (rng.exponential(size=50_000), (0.005, 5e-4)),
        "zero_one": ((rng.random(50_000) < 0.4).astype(np.float64), (0.05, 0.005)),
    }
    for name, (xs, alphas) in cases.items():
        h = kr.statistics(xs, window_size=300, stat_size=100, seed=5)
        for alpha in alphas:
            ours = kr.alarmed_windows(
                h, kr.firing(alpha, 100), window_size=300, window_events=500
            ) / 100
            river = kr.window_rate(
                kr.replay(xs, alpha=alpha, window_size=300, stat_size=100, seed=0),
                window_events=500,
                windows=100,
            )
            assert 0.02 <= river <= 0.98, (name, alpha, river)  # a rate that can differ
            assert abs(ours - river) <= 0.1, (name, alpha, ours, river)
