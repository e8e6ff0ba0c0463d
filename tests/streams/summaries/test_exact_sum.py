"""Exact sums: the same partials, bit for bit, whatever the order and batches."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.summaries import exact_sum

finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300)


@settings(max_examples=300, deadline=None)
@given(st.lists(finite, max_size=600), st.randoms(use_true_random=False))
def test_any_order_and_any_batches_give_the_same_sum(values: list[float], rnd) -> None:
    x = np.asarray(values, dtype=np.float64)
    whole = exact_sum.add([], x)
    order = list(range(len(values)))
    rnd.shuffle(order)
    cuts = sorted(rnd.sample(range(len(values) + 1), k=min(3, len(values) + 1)))
    total: exact_sum.ExactSum = []
    for a, b in zip([0, *cuts], [*cuts, len(values)], strict=True):
        total = exact_sum.add(total, x[order[a:b]])
    assert total == whole
    assert exact_sum.value(total) == math.fsum(values)  # the exact sum, correctly rounded


@pytest.mark.parametrize("scale", [1e-300, 1e-20, 1.0, 1e20, 1e290])
def test_large_batches_are_cut_exactly(scale: float) -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal(50_000) * scale * 10.0 ** rng.integers(-8, 8, 50_000)
    assert math.fsum(exact_sum.compress(x)) == math.fsum(x)
    halves = exact_sum.add(exact_sum.add([], x[::2]), x[1::2])
    assert halves == exact_sum.add([], x[::-1])
    assert exact_sum.value(halves) == math.fsum(x)
    assert len(halves) <= 40


def test_a_plain_float_from_an_older_state_is_its_own_sum() -> None:
    assert exact_sum.partials(0.25) == [0.25]
    assert exact_sum.partials(0.0) == []
    assert exact_sum.add(0.1, np.array([0.2])) == exact_sum.add([], np.array([0.2, 0.1]))
    assert exact_sum.merge(0.5, [0.25]) == [0.75]


def test_a_sum_past_the_largest_float_is_infinite() -> None:
    total = exact_sum.add([], np.array([1.7e308, 1.7e308]))
    assert total == [math.inf]
    assert exact_sum.add(total, np.array([1.0])) == [math.inf]
