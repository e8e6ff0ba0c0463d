"""The log-bucket quantile sketch (streams/summaries/log_histogram.py).

Ground truth is the raw data, from seeded generators. Measured (these seeds and sizes):

* quantiles: the sketch reads the order statistic ``x_(floor(r * n))`` (0-based, the
  last one for r = 1), which is ``np.quantile(x, r, method="inverted_cdf")`` whenever
  ``r * n`` is not an integer. It returns the middle of that value's bucket, so the
  relative error is at most a = 1 % with DDSketch's estimate 2 lo hi / (lo + hi)
  (reached by a value on a bucket's boundary). Values within ``min_value`` of the
  anchor read exactly the anchor.
* bin counts on ``quantile_edges`` equal np.searchsorted(edges, x, side="right")
  binning of the raw values exactly (no tolerance) for every distribution tested,
  boundary values included (the regression tests at the end).
* the 10 bins from ``quantile_edges`` on continuous data (n = 20,000) each hold
  0.1 of the values to within 0.0149 (worst over 10 seeds, uniform data; normal
  0.0047, lognormal 0.0072, exponential 0.0068); asserted <= 0.025.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import orjson
import pytest

from streams.summaries.log_histogram import LogHistogram, LogHistogramState

Floats = npt.NDArray[np.float64]

A = LogHistogram.RELATIVE_ACCURACY
#: What the mid-bucket estimate guarantees: (gamma - 1) / 2 with gamma = (1 + a) / (1 - a).
QUANTILE_RTOL = A + 1e-12  # DDSketch estimate: within a of every value in its bucket


def _zero_inflated(rng: np.random.Generator, n: int, zeros: float) -> Floats:
    return np.where(rng.random(n) < zeros, 0.0, rng.lognormal(3.0, 1.0, n))


def _flags(rng: np.random.Generator, n: int, ones: float) -> Floats:
    return (rng.random(n) < ones).astype(np.float64)


DISTRIBUTIONS: dict[str, Callable[[np.random.Generator, int], Floats]] = {
    "normal": lambda rng, n: rng.normal(0.0, 1.0, n),
    "normal_offset": lambda rng, n: rng.normal(50.0, 10.0, n),
    "lognormal": lambda rng, n: rng.lognormal(0.0, 1.0, n),
    "exponential": lambda rng, n: rng.exponential(1.0, n),
    "uniform": lambda rng, n: rng.uniform(0.0, 1.0, n),
    "pareto": lambda rng, n: rng.pareto(1.5, n),
    "mixed_sign": lambda rng, n: np.where(
        rng.random(n) < 0.4, -rng.lognormal(1.0, 2.0, n), rng.lognormal(0.0, 1.5, n)
    ),
    "zeros_30": lambda rng, n: _zero_inflated(rng, n, 0.3),
    "zeros_92": lambda rng, n: _zero_inflated(rng, n, 0.92),
    "flags_05": lambda rng, n: _flags(rng, n, 0.05),
    "flags_60": lambda rng, n: _flags(rng, n, 0.6),
    "flags_95": lambda rng, n: _flags(rng, n, 0.95),
    "poisson": lambda rng, n: rng.poisson(3.0, n).astype(np.float64),
    "log_uniform_wide": lambda rng, n: 10.0 ** rng.uniform(-6.0, 8.0, n),
}


def _state(values: Floats, h: LogHistogram | None = None) -> LogHistogramState:
    h = h or LogHistogram()
    return h.update(h.initialize(), values)


def _exact_counts(x: Floats, edges: Floats) -> npt.NDArray[np.int64]:
    return np.bincount(np.searchsorted(edges, x, side="right"), minlength=edges.size + 1)


# -- quantiles -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dist", ["normal", "lognormal", "mixed_sign", "zeros_30", "pareto"])
def test_quantiles_within_relative_accuracy(seed: int, dist: str) -> None:
    rng = np.random.default_rng(seed)
    n = 20_011  # prime: r * n is an integer only for r in {0, 1} on the grid below
    x = DISTRIBUTIONS[dist](rng, n)
    ranks = np.concatenate([np.linspace(0.0, 1.0, 201), rng.random(200)])
    h = LogHistogram()
    got = h.quantiles(_state(x, h), ranks)

    order = np.minimum(np.floor(ranks * n).astype(np.int64), n - 1)
    truth = np.sort(x)[order]
    # The ground truth is the inverted-CDF empirical quantile (r * n never an integer here
    # except at the ends, where both pick the minimum and the maximum).
    np.testing.assert_array_equal(truth, np.quantile(x, ranks, method="inverted_cdf"))

    tiny = np.abs(truth) < h.min_value
    assert np.all(got[tiny] == 0.0)
    rel = np.abs(got[~tiny] - truth[~tiny]) / np.abs(truth[~tiny])
    assert rel.max() <= QUANTILE_RTOL
    assert np.all(np.sign(got) == np.sign(truth))


def test_quantile_of_a_value_on_a_bucket_boundary() -> None:
    # 1.0 is the lower boundary of its bucket: DDSketch's estimate 2 lo hi / (lo + hi)
    # is off by exactly the relative accuracy a there, never more.
    h = LogHistogram()
    (got,) = h.quantiles(_state(np.array([1.0])), np.array([0.5]))
    assert abs(got - 1.0) <= A + 1e-12


def test_quantile_ranks_at_an_integer_rank_read_the_next_order_statistic() -> None:
    # r * n = 2 exactly: inverted_cdf gives the 2nd smallest value, the sketch the 3rd.
    x = np.array([1.0, 2.0, 4.0, 8.0])
    (got,) = LogHistogram().quantiles(_state(x), np.array([0.5]))
    assert np.quantile(x, 0.5, method="inverted_cdf") == 2.0
    assert got == pytest.approx(4.0, rel=QUANTILE_RTOL)


def test_zeros_read_as_zero_and_tiny_values_join_them() -> None:
    h = LogHistogram()
    st = _state(np.array([0.0, 0.0, 5e-10, -5e-10, 3.0]), h)
    assert st["keys"][0] == 0 and st["counts"][0] == 4
    np.testing.assert_array_equal(h.quantiles(st, np.array([0.0, 0.5, 0.7])), [0.0, 0.0, 0.0])
    assert h.quantiles(st, np.array([1.0]))[0] == pytest.approx(3.0, rel=QUANTILE_RTOL)


# -- buckets ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_keys_sort_like_values_and_bounds_hold_them(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = np.sort(DISTRIBUTIONS["mixed_sign"](rng, 5000))
    h = LogHistogram()
    keys = h.keys_of(x)
    assert np.all(np.diff(keys) >= 0)
    for value, key in zip(x.tolist(), keys.tolist(), strict=True):
        lo, hi = h.bounds(key)
        if key > 0:  # [lo, hi)
            assert lo <= value < hi
        else:  # mirrored: (lo, hi]
            assert lo < value <= hi
        assert (hi - lo) <= 2 * A / (1 - A) * max(abs(lo), abs(hi)) + 1e-15


def test_state_is_plain_json() -> None:
    st = _state(np.random.default_rng(3).normal(size=1000))
    assert set(st) == {"anchor", "keys", "counts"}
    assert all(type(k) is int for k in st["keys"])
    assert all(type(c) is int and c > 0 for c in st["counts"])
    assert st["keys"] == sorted(set(st["keys"]))
    assert orjson.loads(orjson.dumps(st)) == st


# -- merge, determinism, order ----------------------------------------------------------


@pytest.mark.parametrize("max_buckets", [LogHistogram.MAX_BUCKETS, 8])
@pytest.mark.parametrize("split", [0, 1, 3000, 9999, 10_000])
@pytest.mark.parametrize("dist", ["normal", "mixed_sign", "zeros_30", "log_uniform_wide"])
def test_merge_equals_update_on_concatenation(dist: str, split: int, max_buckets: int) -> None:
    # max_buckets=8 collapses in every step: merging stays exact even then.
    rng = np.random.default_rng(20)
    x = DISTRIBUTIONS[dist](rng, 10_000)
    h = LogHistogram(max_buckets=max_buckets)
    a, b = _state(x[:split], h), _state(x[split:], h)
    whole = _state(x, h)
    assert h.merge(a, b) == whole
    assert h.merge(b, a) == whole
    assert h.merge(whole, h.initialize()) == whole
    assert h.merge(h.initialize(), whole) == whole
    assert h.count(whole) == x.size


@pytest.mark.parametrize("max_buckets", [LogHistogram.MAX_BUCKETS, 8])
def test_update_in_chunks_equals_whole(max_buckets: int) -> None:
    x = DISTRIBUTIONS["log_uniform_wide"](np.random.default_rng(21), 30_000)
    h = LogHistogram(max_buckets=max_buckets)
    state = h.initialize()
    for chunk in np.array_split(x, 13):
        state = h.update(state, chunk)
    assert state == _state(x, h)


@pytest.mark.parametrize("dist", sorted(DISTRIBUTIONS))
def test_same_input_gives_identical_state(dist: str) -> None:
    x = DISTRIBUTIONS[dist](np.random.default_rng(22), 50_000)
    first = _state(x)
    assert _state(x.copy()) == first
    assert _state(x, LogHistogram()) == first


@pytest.mark.parametrize("dist", ["normal", "mixed_sign", "zeros_92", "flags_60"])
def test_shuffled_input_gives_identical_state(dist: str) -> None:
    rng = np.random.default_rng(23)
    x = DISTRIBUTIONS[dist](rng, 20_000)
    first = _state(x)
    for _ in range(3):
        assert _state(rng.permutation(x)) == first
    assert _state(np.sort(x)) == first
    assert _state(np.sort(x)[::-1]) == first


def test_state_is_identical_in_another_process() -> None:
    # No hidden randomness: a fresh process (another hash seed, fresh RNGs) agrees.
    code = (
        "import numpy as np, orjson, sys;"
        "from streams.summaries.log_histogram import LogHistogram;"
        "h = LogHistogram();"
        "x = np.random.default_rng(24).lognormal(0.0, 2.0, 100_000);"
        "sys.stdout.buffer.write(orjson.dumps(h.update(h.initialize(), x)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, check=True, timeout=120
    ).stdout
    expected = _state(np.random.default_rng(24).lognormal(0.0, 2.0, 100_000))
    assert orjson.loads(out) == expected


# -- quantile edges and bin counts ---------------------------------------------------------


@pytest.mark.parametrize("bins", [2, 4, 10, 20, 50])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dist", sorted(DISTRIBUTIONS))
def test_bin_counts_equal_exact_binning(dist: str, seed: int, bins: int) -> None:
    x = DISTRIBUTIONS[dist](np.random.default_rng(seed), 20_000)
    h = LogHistogram()
    st = _state(x, h)
    edges = h.quantile_edges(st, bins)
    assert edges.dtype == np.float64
    assert np.all(np.diff(edges) > 0)
    counts = h.bin_counts(st, edges)
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, _exact_counts(x, edges))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dist", ["normal", "mixed_sign", "zeros_92", "flags_05", "pareto"])
def test_reference_edges_bin_a_later_sketch_exactly(dist: str, seed: int) -> None:
    # What the monitor does with a window that was partly sketched: the reference's
    # edges applied to another sketch.
    rng = np.random.default_rng(seed)
    h = LogHistogram()
    edges = h.quantile_edges(_state(DISTRIBUTIONS[dist](rng, 20_000), h), 10)
    later = DISTRIBUTIONS[dist](rng, 5_000) * 1.3 + 0.2
    counts = h.bin_counts(_state(later, h), edges)
    np.testing.assert_array_equal(counts, _exact_counts(later, edges))


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("dist", ["normal", "lognormal", "uniform", "exponential"])
def test_quantile_edges_split_continuous_data_evenly(dist: str, seed: int) -> None:
    x = DISTRIBUTIONS[dist](np.random.default_rng(seed), 20_000)
    h = LogHistogram()
    st = _state(x, h)
    edges = h.quantile_edges(st, 10)
    assert edges.size == 9
    share = h.bin_counts(st, edges) / x.size
    assert np.max(np.abs(share - 0.1)) <= 0.025
    # Each edge is the top of the bucket holding its quantile: at least i/10 lie below it.
    ecdf = np.searchsorted(np.sort(x), edges, side="left") / x.size
    assert np.all(ecdf >= np.arange(1, 10) / 10)


@pytest.mark.parametrize(
    ("dist", "atom"),
    [("flags_05", 0.0), ("flags_60", 1.0), ("flags_95", 1.0), ("zeros_92", 0.0)],
)
def test_an_atom_gets_a_bin_of_its_own(dist: str, atom: float) -> None:
    x = DISTRIBUTIONS[dist](np.random.default_rng(25), 10_000)
    h = LogHistogram()
    st = _state(x, h)
    edges = h.quantile_edges(st, 10)
    counts = h.bin_counts(st, edges)
    atom_bin = int(np.searchsorted(edges, atom, side="right"))
    assert counts[atom_bin] == np.count_nonzero(x == atom)
    assert 0 < atom_bin < edges.size  # bounded by edges on both sides


def test_few_distinct_values_give_few_edges() -> None:
    h = LogHistogram()
    st = _state(np.full(1000, 7.0), h)
    edges = h.quantile_edges(st, 10)
    lo, hi = h.bounds(h.keys_of(np.array([7.0]))[0])
    np.testing.assert_array_equal(edges, [lo, hi])
    np.testing.assert_array_equal(h.bin_counts(st, edges), [0, 1000, 0])


@pytest.mark.parametrize("bins", [0, 1])
def test_fewer_than_two_bins_give_no_edges(bins: int) -> None:
    h = LogHistogram()
    assert h.quantile_edges(_state(np.arange(1.0, 100.0), h), bins).size == 0


# -- bounded state --------------------------------------------------------------------------


def test_six_orders_of_magnitude_need_about_700_buckets() -> None:
    x = 10.0 ** np.random.default_rng(26).uniform(0.0, 6.0, 100_000)
    n_keys = len(_state(x)["keys"])
    expected = 6 * math.log(10) / math.log((1 + A) / (1 - A))  # 690.8
    assert expected - 2 <= n_keys <= expected + 2


@pytest.mark.parametrize("max_buckets", [8, 100, LogHistogram.MAX_BUCKETS])
def test_collapse_keeps_the_count_and_the_top_buckets(max_buckets: int) -> None:
    rng = np.random.default_rng(27)
    positive = 10.0 ** rng.uniform(-300, 300, 50_000)
    x = np.concatenate([positive, -(10.0 ** rng.uniform(-9, 9, 50_000))])
    h = LogHistogram(max_buckets=max_buckets)
    st = _state(x, h)
    assert len(st["keys"]) == max_buckets
    assert h.count(st) == x.size
    full = _state(x, LogHistogram(max_buckets=10**9))
    # The highest buckets are kept as they are; the rest sit in the lowest bucket kept.
    assert st["keys"] == full["keys"][-max_buckets:]
    assert st["counts"][1:] == full["counts"][-max_buckets + 1 :]
    assert st["counts"][0] == sum(full["counts"][: -max_buckets + 1])


def test_state_stays_bounded_over_many_updates() -> None:
    rng = np.random.default_rng(28)
    h = LogHistogram()
    state = h.initialize()
    for _ in range(20):
        span = rng.uniform(-300, 300, 5000)
        state = h.update(state, np.sign(rng.normal(size=5000)) * 10.0**span)
        assert len(state["keys"]) <= LogHistogram.MAX_BUCKETS
    assert h.count(state) == 100_000


# -- configuration and empty input -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"relative_accuracy": 0.0}, "relative_accuracy"),
        ({"relative_accuracy": 1.0}, "relative_accuracy"),
        ({"relative_accuracy": -0.01}, "relative_accuracy"),
        ({"relative_accuracy": float("nan")}, "relative_accuracy"),
        ({"min_value": 0.0}, "min_value"),
        ({"min_value": -1e-9}, "min_value"),
        ({"min_value": float("nan")}, "min_value"),
        ({"max_buckets": 7}, "max_buckets"),
        ({"max_buckets": 0}, "max_buckets"),
    ],
)
def test_constructor_refuses_bad_arguments(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LogHistogram(**kwargs)  # type: ignore[arg-type]


def test_constructor_stores_its_arguments() -> None:
    h = LogHistogram(relative_accuracy=0.05, min_value=1e-6, max_buckets=500)
    assert (h.relative_accuracy, h.min_value, h.max_buckets) == (0.05, 1e-6, 500)
    x = np.random.default_rng(29).lognormal(0.0, 1.0, 5000)
    ranks = np.linspace(0.0, 1.0, 11)
    truth = np.sort(x)[np.minimum(np.floor(ranks * x.size).astype(np.int64), x.size - 1)]
    rel = np.abs(h.quantiles(_state(x, h), ranks) - truth) / truth
    assert rel.max() <= 0.05 / 0.95 + 1e-12


def test_empty_state() -> None:
    h = LogHistogram()
    empty = h.initialize()
    assert empty == {"anchor": 0.0, "keys": [], "counts": []}
    assert h.count(empty) == 0
    assert h.quantile_edges(empty, 10).size == 0
    assert h.quantiles(empty, np.array([0.5])).size == 0
    np.testing.assert_array_equal(h.bin_counts(empty, np.array([0.0, 1.0])), [0, 0, 0])
    assert h.bin_counts(empty, np.array([0.0])).dtype == np.int64
    assert h.update(empty, np.array([])) is empty
    assert h.merge(empty, h.initialize()) == empty
    st = _state(np.array([1.0, 2.0]), h)
    assert h.update(st, np.array([])) is st


def test_update_does_not_mutate_its_input() -> None:
    h = LogHistogram()
    st = _state(np.array([1.0, 2.0, -3.0]), h)
    snapshot = orjson.dumps(st)
    h.update(st, np.array([1.0, 100.0]))
    h.merge(st, st)
    assert orjson.dumps(st) == snapshot


# -- regressions: boundary values, the zero bucket, float extremes --------------------------


def test_negative_boundary_value_bins_like_raw_data() -> None:
    x = np.repeat([-1.0, 0.0, 1.0], [300, 400, 300])
    h = LogHistogram()
    st = _state(x, h)
    edges = h.quantile_edges(st, 10)
    np.testing.assert_array_equal(h.bin_counts(st, edges), _exact_counts(x, edges))


def test_values_near_min_value_bin_like_raw_data() -> None:
    x = np.repeat([0.0, 9.9e-10, 1e-9, 1.001e-9], [400, 100, 300, 200])
    h = LogHistogram()
    st = _state(x, h)
    edges = h.quantile_edges(st, 4)
    np.testing.assert_array_equal(h.bin_counts(st, edges), _exact_counts(x, edges))


def test_values_near_float_max_have_edges() -> None:
    h = LogHistogram()
    st = _state(np.array([1.0, np.finfo(np.float64).max]), h)
    assert h.quantile_edges(st, 2).size >= 1
