"""PSI (streams/drift/psi.py) and the numeric and categorical summaries it is computed from."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import orjson
import pytest
from scipy.special import rel_entr

from streams.drift.psi import EPSILON, psi
from streams.summaries.categorical import CategoricalSummary
from streams.summaries.log_histogram import LogHistogram
from streams.summaries.numeric import NumericSummary
from tests.streams.raw import direct_counts

Floats = npt.NDArray[np.float64]
DECILES = [i / 10 for i in range(1, 10)]


_direct_counts = direct_counts


def _direct_psi(ref_counts: Floats, cur_counts: Floats) -> float:
    p = np.maximum(ref_counts / ref_counts.sum(), EPSILON)
    q = np.maximum(cur_counts / cur_counts.sum(), EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


def _kernel_numeric_psi(ref: Floats, cur: Floats, edges: Floats) -> float:
    summary = NumericSummary()
    ref_state = summary.update(summary.initialize(), ref, edges)
    cur_state = summary.update(summary.initialize(), cur, edges)
    return psi(summary.bin_counts(ref_state, edges), summary.bin_counts(cur_state, edges))


# -- psi ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("shift", "scale"), [(0.0, 1.0), (0.3, 1.0), (1.0, 1.0), (0.0, 2.0), (3.0, 0.5)]
)
def test_numeric_psi_matches_direct_computation(seed: int, shift: float, scale: float) -> None:
    rng = np.random.default_rng(seed)
    ref = rng.normal(0.0, 1.0, 5000)
    cur = rng.normal(shift, scale, 3000)
    edges = np.quantile(ref, DECILES)
    expected = _direct_psi(_direct_counts(ref, edges), _direct_counts(cur, edges))
    assert _kernel_numeric_psi(ref, cur, edges) == pytest.approx(expected, abs=1e-12)


def test_numeric_psi_with_values_on_the_edges() -> None:
    # Integer data put many values exactly on the edges: the bin convention matters here.
    rng = np.random.default_rng(5)
    ref = rng.poisson(3.0, 4000).astype(np.float64)
    cur = rng.poisson(3.6, 4000).astype(np.float64)
    edges = np.unique(np.quantile(ref, DECILES))
    expected = _direct_psi(_direct_counts(ref, edges), _direct_counts(cur, edges))
    assert _kernel_numeric_psi(ref, cur, edges) == pytest.approx(expected, abs=1e-12)
    assert expected > 0.01


def test_psi_equals_symmetrised_relative_entropy() -> None:
    ref = np.array([120.0, 300.0, 0.0, 80.0, 500.0])
    cur = np.array([100.0, 250.0, 40.0, 0.0, 610.0])
    p = np.maximum(ref / ref.sum(), EPSILON)
    q = np.maximum(cur / cur.sum(), EPSILON)
    expected = float(np.sum(rel_entr(q, p) + rel_entr(p, q)))
    assert psi(ref, cur) == pytest.approx(expected, abs=1e-12)


def test_psi_doctest_value() -> None:
    # 0.4 * ln(0.9 / 0.5) - 0.4 * ln(0.1 / 0.5)
    assert psi([50, 50], [90, 10]) == pytest.approx(0.4 * np.log(9), abs=1e-12)


@pytest.mark.parametrize("counts", [[10, 20, 30, 40], [1, 0, 0, 0], [5, 5], [0, 7, 0]])
def test_psi_of_identical_distributions_is_zero(counts: list[int]) -> None:
    assert psi(counts, counts) == 0.0
    assert psi(counts, [3 * c for c in counts]) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize(
    ("ref", "cur"), [([1, 2, 3], [1, 2]), ([1, 2], [[1, 2]]), ([], [1]), ([1, 2, 3], 5)]
)
def test_psi_refuses_shape_mismatch(ref: list[int], cur: list[int]) -> None:
    with pytest.raises(ValueError, match="bins differ"):
        psi(ref, cur)


@pytest.mark.parametrize(
    ("ref", "cur"),
    [([0, 0, 0], [1, 2, 3]), ([1, 2, 3], [0, 0, 0]), ([0, 0], [0, 0]), ([], [])],
)
def test_psi_with_an_empty_side_is_zero(ref: list[int], cur: list[int]) -> None:
    assert psi(ref, cur) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_psi_is_symmetric(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 100, 12).astype(np.float64)
    b = rng.integers(0, 100, 12).astype(np.float64)
    a[seed] = 0  # one empty bin: the floor applies on one side only
    assert psi(a, b) == pytest.approx(psi(b, a), abs=1e-12)
    assert psi(a, b) > 0


def test_psi_floor_keeps_an_empty_bin_finite() -> None:
    value = psi([100, 0], [50, 50])
    assert np.isfinite(value)
    assert value == pytest.approx(_direct_psi(np.array([100.0, 0.0]), np.array([50.0, 50.0])))


def test_categorical_psi_matches_np_unique() -> None:
    rng = np.random.default_rng(11)
    names = np.array(["a", "b", "c", "d", "e", "f", "g"])
    ref = rng.choice(names, 6000, p=[0.3, 0.2, 0.15, 0.15, 0.1, 0.05, 0.05])
    cur = rng.choice(names, 4000, p=[0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1])
    summary = CategoricalSummary()
    ref_state = summary.update(CategoricalSummary.initialize(), ref.tolist())
    cur_state = summary.update(CategoricalSummary.initialize(), cur.tolist())
    top = CategoricalSummary.top_categories(ref_state, 4)
    assert top == ["a", "b", "c", "d"] or top == ["a", "b", "d", "c"]

    def direct(values: npt.NDArray[np.str_]) -> Floats:
        uniq, counts = np.unique(values, return_counts=True)
        by_name = dict(zip(uniq.tolist(), counts.tolist(), strict=True))
        cells = [by_name.get(c, 0) for c in top]
        return np.array([*cells, len(values) - sum(cells)], dtype=np.float64)

    ref_counts = CategoricalSummary.bin_counts(ref_state, top)
    cur_counts = CategoricalSummary.bin_counts(cur_state, top)
    np.testing.assert_array_equal(ref_counts, direct(ref))
    np.testing.assert_array_equal(cur_counts, direct(cur))
    assert psi(ref_counts, cur_counts) == pytest.approx(
        _direct_psi(direct(ref), direct(cur)), abs=1e-12
    )


# -- NumericSummary ---------------------------------------------------------------------


def _exact_counts(x: Floats, edges: Floats) -> npt.NDArray[np.int64]:
    return np.bincount(np.searchsorted(edges, x, side="right"), minlength=edges.size + 1)


@pytest.mark.parametrize("edges", [np.array([-1.0, 0.0, 1.0]), None])
def test_numeric_nan_counts_as_missing(edges: Floats | None) -> None:
    values = np.array([0.5, np.nan, -2.0, np.nan, 1.0, np.nan])
    summary = NumericSummary()
    state = summary.update(summary.initialize(), values, edges)
    assert state["missing"] == 3
    assert summary.count(state) == 3


def test_numeric_all_missing_or_empty_keeps_state() -> None:
    summary = NumericSummary()
    for edges in (np.array([0.0]), None):
        start = summary.update(summary.initialize(), np.array([1.0, -1.0]), edges)
        assert summary.update(start, np.array([]), edges) == start
        after = summary.update(start, np.array([np.nan, np.nan]), edges)
        assert after == {**start, "missing": 2}


def test_numeric_counts_use_right_open_bins() -> None:
    edges = np.array([0.0, 1.0, 2.0])
    values = np.array([-0.1, 0.0, 0.99, 1.0, 2.0, 7.0])
    summary = NumericSummary()
    state = summary.update(summary.initialize(), values, edges)
    assert state["counts"] == [1, 2, 1, 2]
    assert state["sketch"] is None
    counts = summary.bin_counts(state, edges)
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, [1, 2, 1, 2])


@pytest.mark.parametrize("split", [0, 1, 777, 1999, 2000])
@pytest.mark.parametrize("binned", [True, False])
def test_numeric_merge_of_halves_equals_whole(split: int, binned: bool) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=2000)
    x[rng.integers(0, 2000, 50)] = np.nan
    edges = np.quantile(x[~np.isnan(x)], DECILES) if binned else None
    summary = NumericSummary()
    init = summary.initialize()
    whole = summary.update(init, x, edges)
    merged = summary.merge(
        summary.update(init, x[:split], edges), summary.update(init, x[split:], edges)
    )
    assert merged == whole
    assert summary.merge(whole, init) == whole
    assert summary.merge(init, whole) == whole


@pytest.mark.parametrize("binned", [True, False])
def test_numeric_update_in_chunks_equals_whole(binned: bool) -> None:
    x = np.random.default_rng(4).exponential(size=3000)
    edges = np.quantile(x, DECILES) if binned else None
    summary = NumericSummary()
    state = summary.initialize()
    for chunk in np.array_split(x, 7):
        state = summary.update(state, chunk, edges)
    assert state == summary.update(summary.initialize(), x, edges)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dist", ["normal", "lognormal", "uniform"])
def test_numeric_sketch_quantiles_and_counts(seed: int, dist: str) -> None:
    rng = np.random.default_rng(seed)
    n = 20_000
    x = getattr(rng, dist)(size=n)
    x[:100] = np.nan
    finite = x[~np.isnan(x)]
    summary = NumericSummary()
    state = summary.update(summary.initialize(), x, None)
    assert state["counts"] is None
    assert state["missing"] == 100
    assert summary.count(state) == finite.size

    edges = summary.quantile_edges(state, 10)
    assert edges.shape == (9,)
    assert np.all(np.diff(edges) > 0)
    # Each edge is the top of the bucket holding its decile: the share below it is at
    # least the decile and at most the decile plus that bucket (worst seen: +0.0114).
    ecdf = np.searchsorted(np.sort(finite), edges, side="left") / finite.size
    assert np.all(ecdf >= np.array(DECILES))
    assert np.max(ecdf - np.array(DECILES)) <= 0.025

    # Edges on bucket boundaries: the counts read from the sketch are exact.
    counts = summary.bin_counts(state, edges)
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, _exact_counts(finite, edges))


@pytest.mark.parametrize("cut", [0, 1, 2500, 4999, 5000])
def test_numeric_half_sketched_half_binned_counts_exactly(cut: int) -> None:
    # A window open when the reference is completed: its first values were sketched,
    # the rest binned on the reference's edges. Counts are exact either way.
    rng = np.random.default_rng(6)
    summary = NumericSummary()
    reference = summary.update(summary.initialize(), rng.lognormal(size=8000), None)
    edges = summary.quantile_edges(reference, 10)
    x = rng.lognormal(0.3, 1.0, 5000)
    x[::50] = np.nan
    state = summary.update(summary.initialize(), x[:cut], None)
    state = summary.update(state, x[cut:], edges)
    finite = x[~np.isnan(x)]
    assert summary.count(state) == finite.size
    assert state["missing"] == 100
    counts = summary.bin_counts(state, edges)
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, _exact_counts(finite, edges))


def test_numeric_sketch_without_values_has_no_edges() -> None:
    summary = NumericSummary()
    state = summary.initialize()
    assert summary.quantile_edges(state, 10).size == 0
    assert summary.count(state) == 0
    counts = summary.bin_counts(state, np.array([0.0]))
    np.testing.assert_array_equal(counts, [0, 0])
    assert counts.dtype == np.int64
    only_missing = summary.update(state, np.array([np.nan]), None)
    assert only_missing == {"missing": 1, "counts": None, "sketch": None, "lo": None, "hi": None}
    assert summary.quantile_edges(only_missing, 10).size == 0


def test_numeric_sketch_merge_sums_n() -> None:
    rng = np.random.default_rng(8)
    summary = NumericSummary()
    xa, xb = rng.normal(size=7000), rng.normal(3.0, 1.0, 5000)
    a = summary.update(summary.initialize(), xa, None)
    b = summary.update(summary.initialize(), xb, None)
    merged = summary.merge(a, b)
    assert summary.count(merged) == 12_000
    assert merged == summary.update(summary.initialize(), np.concatenate([xa, xb]), None)
    assert summary.merge(a, summary.initialize()) == a
    assert summary.merge(summary.initialize(), b) == b
    # The merged sketch describes both halves: its median sits between theirs.
    median = summary.quantile_edges(merged, 2)[0]
    assert 0.5 < median < 2.5


def test_numeric_sketch_is_deterministic() -> None:
    x = np.random.default_rng(10).lognormal(0.0, 2.0, 50_000)
    summary = NumericSummary()
    first = summary.update(summary.initialize(), x, None)
    assert NumericSummary().update(summary.initialize(), x, None) == first
    shuffled = np.random.default_rng(11).permutation(x)
    assert summary.update(summary.initialize(), shuffled, None) == first


def test_numeric_sketch_is_bounded() -> None:
    summary = NumericSummary()
    state = summary.initialize()
    rng = np.random.default_rng(9)
    for _ in range(20):
        state = summary.update(state, rng.normal(size=5000), None)
    assert summary.count(state) == 100_000
    assert state["sketch"] is not None
    assert len(state["sketch"]["keys"]) <= LogHistogram.MAX_BUCKETS
    assert len(state["sketch"]["keys"]) == len(state["sketch"]["counts"])


def test_numeric_sketch_of_many_orders_of_magnitude_is_bounded() -> None:
    # Both signs, magnitudes from 1e-300 to 1e300: far more than 2,048 buckets' worth.
    summary = NumericSummary()
    state = summary.initialize()
    rng = np.random.default_rng(12)
    for _ in range(10):
        x = np.sign(rng.normal(size=10_000)) * 10.0 ** rng.uniform(-300, 300, 10_000)
        state = summary.update(state, x, None)
        assert state["sketch"] is not None
        assert len(state["sketch"]["keys"]) <= LogHistogram.MAX_BUCKETS
    assert state["sketch"] is not None
    assert len(state["sketch"]["keys"]) == LogHistogram.MAX_BUCKETS
    assert summary.count(state) == 100_000
    assert len(orjson.dumps(state)) < 40_000


def test_numeric_summary_uses_the_given_sketch() -> None:
    small = LogHistogram(max_buckets=16)
    summary = NumericSummary(sketch=small)
    assert summary.sketch is small
    state = summary.update(summary.initialize(), 10.0 ** np.arange(-5.0, 5.0, 0.01), None)
    assert state["sketch"] is not None
    assert len(state["sketch"]["keys"]) == 16
    assert summary.count(state) == 1000
    assert isinstance(NumericSummary().sketch, LogHistogram)


# -- CategoricalSummary -----------------------------------------------------------------


def test_categorical_cap_and_missing() -> None:
    summary = CategoricalSummary(max_categories=3)
    values = ["a"] * 5 + ["b"] * 4 + ["c"] * 3 + ["d"] * 2 + ["e"] + [None, None]
    state = summary.update(CategoricalSummary.initialize(), values)
    assert state == {"missing": 2, "counts": {"a": 5, "b": 4, "c": 3}, "other": 3}
    assert CategoricalSummary.count(state) == 15
    # Once full, new categories keep going to "other" while tracked ones keep counting.
    state = summary.update(state, ["z", "z", "a", None])
    assert state == {"missing": 3, "counts": {"a": 6, "b": 4, "c": 3}, "other": 5}


@pytest.mark.parametrize("values", [[], [None, None]])
def test_categorical_empty_or_missing_only(values: list[str | None]) -> None:
    state = CategoricalSummary().update(CategoricalSummary.initialize(), values)
    assert state == {"missing": len(values), "counts": {}, "other": 0}
    assert CategoricalSummary.count(state) == 0
    np.testing.assert_array_equal(CategoricalSummary.bin_counts(state, ["a"]), [0, 0])


def test_categorical_merge_adds_counts() -> None:
    summary = CategoricalSummary()
    a = summary.update(CategoricalSummary.initialize(), ["x", "y", "x", None])
    b = summary.update(CategoricalSummary.initialize(), ["y", "z", None, None])
    merged = summary.merge(a, b)
    assert merged == {"missing": 3, "counts": {"x": 2, "y": 2, "z": 1}, "other": 0}
    assert merged == summary.update(
        CategoricalSummary.initialize(), ["x", "y", "x", None, "y", "z", None, None]
    )
    assert a == {"missing": 1, "counts": {"x": 2, "y": 1}, "other": 0}  # inputs unchanged


def test_categorical_merge_respects_cap() -> None:
    summary = CategoricalSummary(max_categories=2)
    a = summary.update(CategoricalSummary.initialize(), ["a", "a", "b", "c"])
    b = summary.update(CategoricalSummary.initialize(), ["d", "d", "d", "a", "e"])
    merged = summary.merge(a, b)
    assert len(merged["counts"]) <= 2
    assert merged["counts"]["a"] == 3
    assert CategoricalSummary.count(merged) == CategoricalSummary.count(
        a
    ) + CategoricalSummary.count(b)


def test_categorical_top_categories_ties_sorted_by_name() -> None:
    summary = CategoricalSummary()
    state = summary.update(CategoricalSummary.initialize(), ["d", "c", "b", "a", "b", "d"])
    assert CategoricalSummary.top_categories(state, 4) == ["b", "d", "a", "c"]
    assert CategoricalSummary.top_categories(state, 3) == ["b", "d", "a"]
    reordered = summary.update(CategoricalSummary.initialize(), ["a", "b", "c", "d", "d", "b"])
    assert CategoricalSummary.top_categories(reordered, 3) == ["b", "d", "a"]
    assert CategoricalSummary.top_categories(state, 10) == ["b", "d", "a", "c"]


def test_categorical_bin_counts_put_the_rest_in_other() -> None:
    summary = CategoricalSummary(max_categories=2)
    state = summary.update(CategoricalSummary.initialize(), ["a", "a", "b", "c", "d", None])
    np.testing.assert_array_equal(CategoricalSummary.bin_counts(state, ["a", "zz"]), [2, 0, 3])
    np.testing.assert_array_equal(CategoricalSummary.bin_counts(state, []), [5])


def test_categorical_summary_refuses_zero_cap() -> None:
    with pytest.raises(ValueError, match="max_categories"):
        CategoricalSummary(max_categories=0)


def test_numeric_update_many_equals_each_feature_counted_alone() -> None:
    # Features of one batch counted at once (bins of different sizes laid end to end,
    # one bincount) land in their own cells, whatever their neighbours hold.
    rng = np.random.default_rng(12)
    n = 400
    values = rng.normal(size=(6, n))
    values[1, ::3] = np.nan
    values[3] = np.nan  # all missing: counts untouched
    edges: list[Floats | None] = [
        np.quantile(values[0], DECILES), np.array([0.0]), None, np.array([-1.0, 1.0]),
        np.linspace(-3, 3, 101), np.quantile(values[5], DECILES),
    ]
    summary = NumericSummary()
    start = [summary.initialize() for _ in edges]
    start[5] = summary.update(summary.initialize(), rng.normal(size=50), edges[5])
    start[3] = summary.update(summary.initialize(), np.array([0.0, 5.0]), edges[3])
    got = summary.update_many(start, values, edges, [0.0] * len(edges))
    for j, (state, cut) in enumerate(zip(start, edges, strict=True)):
        assert got[j] == summary.update(state, values[j], cut)
        if cut is not None:
            finite = values[j][~np.isnan(values[j])]
            before = np.asarray(state["counts"] or np.zeros(cut.size + 1, dtype=np.int64))
            assert got[j]["counts"] == (before + _exact_counts(finite, cut)).tolist()
    assert got[3]["counts"] == start[3]["counts"] and got[3]["missing"] == n
    assert got[2]["sketch"] is not None and got[2]["counts"] is None


def test_numeric_counts_on_other_edges_are_refused() -> None:
    summary = NumericSummary()
    state = summary.update(summary.initialize(), np.array([0.5]), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="3 cells do not fit 3 bin edges"):
        summary.update(state, np.array([0.5]), np.array([0.0, 1.0, 2.0]))
