"""Drift metrics on shared bins (streams/drift/{ks,jensen_shannon,wasserstein,chi_square,missing}).

Tables cover empty input, zero totals, identical distributions and bad input; the
agreement tests compare with scipy on raw data from seeded generators.

Measured tolerances (these seeds and sizes; see each test):

* ks_statistic equals the edge-restricted ks_2samp to 1e-12, and sits below the
  exact ks_2samp statistic by at most the largest bin proportion of either side.
* js_distance equals scipy's jensenshannon(base=2) to 1e-12.
* chi_square equals chi2_contingency(correction=False) to 1e-9 (statistic and p).
* wasserstein_from_quantiles with m=200 np.quantile ranks: within 2% + 1e-3 of
  scipy's wasserstein_distance / ref std for normal and lognormal(sigma=0.5) data,
  same or shifted (worst seen over 40 seeds: 0.52 of that budget for normal, 0.33
  for shifted lognormal). Same-distribution lognormal(0.5) needs 3e-3 absolute
  (worst 0.0022) and the heavier lognormal(sigma=1) 5% + 1e-3 shifted (worst 4.4%)
  or 0.01 absolute unshifted (worst 0.0066): the mid-point grid skips the outer
  1/400 of mass on each side, which is where a heavy tail puts its distance.
* the same from LogHistogram quantiles (1 % relative accuracy, n = 50,000 per side;
  deterministic, so the same numbers on every run). Against W1 from the order
  statistics the sketch reads, the error is bounded by ``a / (1 - a)`` times
  ``mean(|Q_ref| + |Q_win|) / sd`` (each quantile is off by at most that share of
  itself); over 40 seeds the worst was 0.104 of that bound and 0.0027 sd, asserted
  <= 0.005 sd. Against scipy's wasserstein_distance (sketch and mid-point grid
  together) the worst over 40 seeds was 0.0025 sd (normal), 0.0038 (lognormal 0.5)
  and 0.0057 (lognormal 1, shifted), asserted <= 0.005, 0.006 and 0.01 sd.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp, wasserstein_distance

from streams.drift.chi_square import chi_square
from streams.drift.jensen_shannon import js_distance
from streams.drift.ks import ks_statistic
from streams.drift.missing import missing_rate_change, unseen_share
from streams.drift.wasserstein import quantile_grid, wasserstein_from_quantiles
from streams.summaries.log_histogram import LogHistogram
from tests.streams.raw import direct_counts

Floats = npt.NDArray[np.float64]
DECILES = [i / 10 for i in range(1, 10)]


_counts = direct_counts


def _ks_at_edges(ref: Floats, cur: Floats, edges: Floats) -> float:
    """Both empirical CDFs (``P(X < e)``) at the edges, directly from the sorted samples."""
    f = np.searchsorted(np.sort(ref), edges, side="left") / ref.size
    g = np.searchsorted(np.sort(cur), edges, side="left") / cur.size
    return float(np.max(np.abs(f - g)))


_PAIRS = {  # kind -> ((ref mean/loc, ref scale), (cur loc, cur scale), distribution)
    "normal_same": ((0.0, 1.0), (0.0, 1.0), "normal"),
    "normal_shift": ((0.0, 1.0), (0.5, 1.0), "normal"),
    "normal_scale": ((0.0, 1.0), (0.0, 2.0), "normal"),
    "normal_far": ((0.0, 1.0), (3.0, 0.5), "normal"),
    "lognormal05_same": ((0.0, 0.5), (0.0, 0.5), "lognormal"),
    "lognormal05_shift": ((0.0, 0.5), (0.2, 0.5), "lognormal"),
    "lognormal1_same": ((0.0, 1.0), (0.0, 1.0), "lognormal"),
    "lognormal1_shift": ((0.0, 1.0), (0.3, 1.0), "lognormal"),
}


def _raw_pair(kind: str, rng: np.random.Generator, n_ref: int, n_cur: int) -> tuple[Floats, Floats]:
    (ref_loc, ref_scale), (cur_loc, cur_scale), dist = _PAIRS[kind]
    draw = getattr(rng, dist)
    return draw(ref_loc, ref_scale, n_ref), draw(cur_loc, cur_scale, n_cur)


BAD_SHAPES: list[tuple[object, object]] = [
    ([1, 2, 3], [1, 2]),
    ([], [1]),
    ([[1, 2], [3, 4]], [[1, 2], [3, 4]]),
]
NEGATIVE: list[tuple[object, object]] = [([1, -1, 3], [1, 2, 3]), ([1, 2, 3], [0, 0, -1])]


# -- ks_statistic ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "cur", "expected"),
    [
        ([], [], 0.0),
        ([0, 0, 0], [1, 2, 3], 0.0),
        ([1, 2, 3], [0, 0, 0], 0.0),
        ([1, 2, 3], [1, 2, 3], 0.0),
        ([1, 2, 3], [10, 20, 30], 0.0),
        ([5], [7], 0.0),
        ([1, 0], [0, 1], 1.0),
        ([25, 25, 25, 25], [10, 10, 40, 40], 0.3),
        ([50, 50, 0], [40, 40, 20], 0.2),  # a last "other" cell
    ],
)
def test_ks_table(ref: list[int], cur: list[int], expected: float) -> None:
    assert ks_statistic(ref, cur) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize(("ref", "cur"), BAD_SHAPES + NEGATIVE)
def test_ks_rejects_bad_input(ref: npt.ArrayLike, cur: npt.ArrayLike) -> None:
    with pytest.raises(ValueError):
        ks_statistic(ref, cur)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "kind", ["normal_same", "normal_shift", "normal_scale", "normal_far", "lognormal1_shift"]
)
@pytest.mark.parametrize("bins", [10, 20])
def test_ks_matches_ks_2samp_at_edges(seed: int, kind: str, bins: int) -> None:
    rng = np.random.default_rng(seed)
    ref, cur = _raw_pair(kind, rng, 5000, 3000)
    edges = np.quantile(ref, [i / bins for i in range(1, bins)])
    ref_counts, cur_counts = _counts(ref, edges), _counts(cur, edges)

    got = ks_statistic(ref_counts, cur_counts)
    assert got == pytest.approx(_ks_at_edges(ref, cur, edges), abs=1e-12)

    exact = float(ks_2samp(ref, cur, method="asymp").statistic)
    largest_bin = max(
        float(np.max(ref_counts / ref_counts.sum())), float(np.max(cur_counts / cur_counts.sum()))
    )
    assert got <= exact + 1e-12
    assert exact - got <= largest_bin + 1e-12


# -- js_distance -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "cur", "expected"),
    [
        ([], [], 0.0),
        ([0, 0, 0], [1, 2, 3], 0.0),
        ([1, 2, 3], [0, 0, 0], 0.0),
        ([1, 2, 3], [1, 2, 3], 0.0),
        ([1, 2, 3], [10, 20, 30], 0.0),
        ([10, 0], [0, 10], 1.0),
        ([3, 0, 0, 4], [0, 5, 6, 0], 1.0),
    ],
)
def test_js_table(ref: list[int], cur: list[int], expected: float) -> None:
    assert js_distance(ref, cur) == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize(("ref", "cur"), BAD_SHAPES + NEGATIVE)
def test_js_rejects_bad_input(ref: npt.ArrayLike, cur: npt.ArrayLike) -> None:
    with pytest.raises(ValueError):
        js_distance(ref, cur)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("bins", [2, 5, 11, 40])
def test_js_matches_scipy_on_counts(seed: int, bins: int) -> None:
    rng = np.random.default_rng(seed)
    ref = rng.multinomial(1000, rng.dirichlet(np.ones(bins))).astype(np.float64)
    cur = rng.multinomial(300, rng.dirichlet(np.ones(bins))).astype(np.float64)
    cur[rng.integers(bins)] = 0.0  # an empty bin on one side
    assert js_distance(ref, cur) == pytest.approx(jensenshannon(ref, cur, base=2), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kind", ["normal_same", "normal_shift", "normal_far", "lognormal1_shift"])
def test_js_matches_scipy_on_raw_data(seed: int, kind: str) -> None:
    rng = np.random.default_rng(seed)
    ref, cur = _raw_pair(kind, rng, 5000, 3000)
    edges = np.quantile(ref, DECILES)
    ref_counts, cur_counts = _counts(ref, edges), _counts(cur, edges)
    got = js_distance(ref_counts, cur_counts)
    assert 0.0 <= got <= 1.0
    assert got == pytest.approx(jensenshannon(ref_counts, cur_counts, base=2), abs=1e-12)


# -- chi_square --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "cur"),
    [
        ([], []),
        ([0, 0, 0], [1, 2, 3]),
        ([1, 2, 3], [0, 0, 0]),
        ([5], [7]),
        ([5, 0, 0], [7, 0, 0]),  # one non-empty column
        ([0, 0, 5], [0, 0, 7]),
    ],
)
def test_chi_square_degenerate_is_no_evidence(ref: list[int], cur: list[int]) -> None:
    assert chi_square(ref, cur) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("ref", "cur"), [([1, 2, 3], [1, 2, 3]), ([1, 2, 3], [10, 20, 30]), ([4, 0, 6], [2, 0, 3])]
)
def test_chi_square_identical_proportions(ref: list[int], cur: list[int]) -> None:
    stat, p = chi_square(ref, cur)
    assert stat == pytest.approx(0.0, abs=1e-12)
    assert p == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(("ref", "cur"), BAD_SHAPES + NEGATIVE)
def test_chi_square_rejects_bad_input(ref: npt.ArrayLike, cur: npt.ArrayLike) -> None:
    with pytest.raises(ValueError):
        chi_square(ref, cur)


def _scipy_chi2(ref: Floats, cur: Floats) -> tuple[float, float]:
    table = np.vstack([ref, cur])
    table = table[:, table.sum(axis=0) > 0]
    res = chi2_contingency(table, correction=False)
    return float(res.statistic), float(res.pvalue)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("bins", [2, 3, 8, 30])
def test_chi_square_matches_scipy_on_counts(seed: int, bins: int) -> None:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(bins))
    ref = rng.multinomial(2000, probs).astype(np.float64)
    cur = rng.multinomial(500, 0.7 * probs + 0.3 * rng.dirichlet(np.ones(bins))).astype(np.float64)
    if bins > 2:
        ref[0] = cur[0] = 0.0  # a column empty on both sides is dropped
    stat, p = chi_square(ref, cur)
    want_stat, want_p = _scipy_chi2(ref, cur)
    assert stat == pytest.approx(want_stat, rel=1e-9, abs=1e-9)
    assert p == pytest.approx(want_p, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kind", ["normal_same", "normal_shift", "normal_scale"])
def test_chi_square_matches_scipy_on_raw_data(seed: int, kind: str) -> None:
    rng = np.random.default_rng(seed)
    ref, cur = _raw_pair(kind, rng, 5000, 3000)
    edges = np.quantile(ref, DECILES)
    ref_counts, cur_counts = _counts(ref, edges), _counts(cur, edges)
    stat, p = chi_square(ref_counts, cur_counts)
    want_stat, want_p = _scipy_chi2(ref_counts, cur_counts)
    assert stat == pytest.approx(want_stat, rel=1e-9, abs=1e-9)
    assert p == pytest.approx(want_p, rel=1e-9, abs=1e-9)


# -- wasserstein_from_quantiles ----------------------------------------------------------


@pytest.mark.parametrize(
    ("m", "expected"), [(1, [0.5]), (2, [0.25, 0.75]), (4, [0.125, 0.375, 0.625, 0.875])]
)
def test_quantile_grid(m: int, expected: list[float]) -> None:
    assert quantile_grid(m).tolist() == expected


@pytest.mark.parametrize("m", [0, -3])
def test_quantile_grid_rejects_empty(m: int) -> None:
    with pytest.raises(ValueError):
        quantile_grid(m)


@pytest.mark.parametrize(
    ("ref", "cur", "scale", "expected"),
    [
        ([], [], 1.0, 0.0),
        ([], [1.0, 2.0], 1.0, 0.0),  # an empty sketch yields no quantiles
        ([1.0, 2.0], [], 1.0, 0.0),
        ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 1.0, 0.0),
        ([1.0, 2.0, 3.0], [1.5, 2.5, 3.5], 1.0, 0.5),
        ([1.0, 2.0, 3.0], [1.5, 2.5, 3.5], 2.0, 0.25),
        ([0.0, 0.0], [1.0, -1.0], 1.0, 1.0),
    ],
)
def test_wasserstein_table(
    ref: list[float], cur: list[float], scale: float, expected: float
) -> None:
    assert wasserstein_from_quantiles(ref, cur, scale=scale) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize(
    ("ref", "cur", "scale"),
    [
        ([1.0, 2.0], [1.0, 2.0], 0.0),
        ([1.0, 2.0], [1.0, 2.0], -1.0),
        ([1.0, 2.0], [1.0, 2.0], float("nan")),
        ([1.0, 2.0], [1.0, 2.0], float("inf")),
        ([1.0, 2.0, 3.0], [1.0, 2.0], 1.0),
        ([[1.0, 2.0]], [[1.0, 2.0]], 1.0),
        ([1.0, float("nan")], [1.0, 2.0], 1.0),
        ([1.0, 2.0], [1.0, float("inf")], 1.0),
    ],
)
def test_wasserstein_rejects_bad_input(ref: list[float], cur: list[float], scale: float) -> None:
    with pytest.raises(ValueError):
        wasserstein_from_quantiles(ref, cur, scale=scale)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("kind", "rel", "abs_"),
    [
        ("normal_same", 0.02, 1e-3),
        ("normal_shift", 0.02, 1e-3),
        ("normal_scale", 0.02, 1e-3),
        ("normal_far", 0.02, 1e-3),
        ("lognormal05_shift", 0.02, 1e-3),
        ("lognormal05_same", 0.02, 3e-3),
        # Heavier tail: the grid skips the outer 1/400 of mass, so it reads low.
        ("lognormal1_shift", 0.05, 1e-3),
        ("lognormal1_same", 0.0, 1e-2),
    ],
)
def test_wasserstein_matches_scipy_with_exact_quantiles(
    seed: int, kind: str, rel: float, abs_: float
) -> None:
    rng = np.random.default_rng(seed)
    ref, cur = _raw_pair(kind, rng, 20_000, 10_000)
    grid = quantile_grid(200)
    scale = float(np.std(ref))
    got = wasserstein_from_quantiles(np.quantile(ref, grid), np.quantile(cur, grid), scale=scale)
    exact = wasserstein_distance(ref, cur) / scale
    assert abs(got - exact) <= rel * exact + abs_


def _sketch_quantiles(x: Floats, grid: Floats) -> Floats:
    sketch = LogHistogram()
    return sketch.quantiles(sketch.update(sketch.initialize(), x), grid)


def _order_statistics(x: Floats, grid: Floats) -> Floats:
    """The values the sketch reads at ``grid``: ``x_(floor(r * n))``, 0-based."""
    return np.sort(x)[np.minimum(np.floor(grid * x.size).astype(np.int64), x.size - 1)]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("kind", "tolerance_sd"),
    [
        ("normal_same", 0.005),
        ("normal_shift", 0.005),
        ("normal_scale", 0.005),
        ("normal_far", 0.005),
        ("lognormal05_same", 0.006),
        ("lognormal05_shift", 0.006),
        ("lognormal1_same", 0.01),
        ("lognormal1_shift", 0.01),
    ],
)
def test_wasserstein_from_log_histogram_quantiles(
    seed: int, kind: str, tolerance_sd: float
) -> None:
    rng = np.random.default_rng(seed)
    ref, cur = _raw_pair(kind, rng, 50_000, 50_000)
    grid = quantile_grid(200)
    scale = float(np.std(ref))
    got = wasserstein_from_quantiles(
        _sketch_quantiles(ref, grid), _sketch_quantiles(cur, grid), scale=scale
    )
    # Deterministic: the same data give the same distance, to the bit.
    assert got == wasserstein_from_quantiles(
        _sketch_quantiles(ref, grid), _sketch_quantiles(cur, grid), scale=scale
    )

    q_ref, q_cur = _order_statistics(ref, grid), _order_statistics(cur, grid)
    from_order_statistics = wasserstein_from_quantiles(q_ref, q_cur, scale=scale)
    a = LogHistogram.RELATIVE_ACCURACY
    bound = a / (1 - a) * float(np.mean(np.abs(q_ref) + np.abs(q_cur))) / scale
    assert abs(got - from_order_statistics) <= bound
    assert abs(got - from_order_statistics) <= 0.005

    exact = wasserstein_distance(ref, cur) / scale
    assert abs(got - exact) <= tolerance_sd


# -- missing_rate_change / unseen_share --------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((0, 0, 0, 0), 0.0),
        ((0, 0, 5, 10), 0.0),
        ((5, 10, 0, 0), 0.0),
        ((5, 100, 5, 100), 0.0),
        ((5, 100, 50, 1000), 0.0),
        ((5, 100, 30, 100), 0.25),
        ((30, 100, 5, 100), -0.25),
        ((0, 100, 10, 10), 1.0),
        ((100, 100, 0, 10), -1.0),
    ],
)
def test_missing_rate_change_table(args: tuple[int, int, int, int], expected: float) -> None:
    assert missing_rate_change(*args) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize(
    "args", [(-1, 10, 0, 10), (0, -1, 0, 10), (0, 10, 11, 10), (11, 10, 0, 10), (0, 0, 1, 0)]
)
def test_missing_rate_change_rejects_bad_counts(args: tuple[int, int, int, int]) -> None:
    with pytest.raises(ValueError):
        missing_rate_change(*args)


@pytest.mark.parametrize(
    ("window", "reference", "expected"),
    [
        ({}, {"a", "b"}, 0.0),
        ({}, set(), 0.0),
        ({"a": 0, "z": 0}, {"a"}, 0.0),
        ({"a": 3, "b": 1}, {"a", "b"}, 0.0),
        ({"a": 3}, {"a", "b", "c"}, 0.0),  # reference categories missing from the window
        ({"a": 6, "b": 2, "z": 2}, {"a", "b"}, 0.2),
        ({"a": 6, "b": 2, "z": 2}, ["a", "b"], 0.2),
        ({"y": 1, "z": 3}, {"a"}, 1.0),
        ({"y": 1, "z": 3}, set(), 1.0),
    ],
)
def test_unseen_share_table(
    window: dict[str, int], reference: set[str] | list[str], expected: float
) -> None:
    assert unseen_share(window, reference) == pytest.approx(expected, abs=1e-15)


def test_unseen_share_rejects_negative_counts() -> None:
    with pytest.raises(ValueError):
        unseen_share({"a": 2, "z": -1}, {"a"})
