"""Raw labels and predictions to 0/1 (streams/kpi/labels.py): the mapping's edge cases."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from streams.kpi.labels import MISSING, Positive, Raw, canonical, to_binary

NAN = float("nan")


@pytest.mark.parametrize(
    ("positive", "ones", "zeros"),
    [
        (1, [1, 1.0, True, "1", "1.0", " 1 ", "true", "TRUE", np.int64(1), np.float32(1.0)],
         [0, 0.0, False, "0", 2, -1, "2", "yes", "one", "false", 1.5]),
        (True, [True, 1, 1.0, "1", "True"], [False, 0, "0", "false", "yes"]),
        ("1", [1, True, "1", "1.00"], [0, False, "0", "10"]),
        (1.0, [1, True, "1"], [0, 2]),
        # the positive class may be the "negative-looking" one
        (0, [0, 0.0, False, "0", "false", "-0"], [1, True, "1", "true"]),
        ("fraud", ["fraud", " fraud", "fraud\n"], ["Fraud", "FRAUD", "ok", 1, True, "1"]),
        # a label that spells true/false is the number 1/0, so it matches True/False
        ("false", [False, 0, "False"], [True, "no"]),
    ],
)
def test_positive_label_matching(positive: Positive, ones: list[Raw], zeros: list[Raw]) -> None:
    assert to_binary(ones, positive).tolist() == [1] * len(ones)
    assert to_binary(zeros, positive).tolist() == [0] * len(zeros)


@pytest.mark.parametrize("missing", [None, NAN, np.nan, "", "   ", "nan", "NaN"])
def test_missing_values_are_minus_one_not_negative(missing: Raw) -> None:
    assert to_binary([missing, 1, 0], 1).tolist() == [MISSING, 1, 0]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (np.array([True, False, True]), [1, 0, 1]),
        (np.array([1, 0, 2], dtype=np.int64), [1, 0, 0]),
        (np.array([1.0, 0.0, np.nan]), [1, 0, -1]),
        (np.array(["1", "0", "x"]), [1, 0, 0]),
        (np.array([1, "1", None, True], dtype=object), [1, 1, -1, 1]),
    ],
)
def test_numpy_inputs(values: Any, expected: list[int]) -> None:
    out = to_binary(values, 1)
    assert out.dtype == np.int8
    assert out.tolist() == expected


def test_numeric_array_against_a_string_positive_is_all_negative() -> None:
    assert to_binary(np.array([1.0, 0.0, np.nan]), "fraud").tolist() == [0, 0, -1]


def test_empty_input() -> None:
    assert to_binary([], 1).tolist() == []
    assert to_binary(np.array([], dtype=np.float64), 1).tolist() == []


@pytest.mark.parametrize("positive", [None, NAN, "", "  "])
def test_missing_positive_label_is_an_error(positive: Any) -> None:
    with pytest.raises(ValueError, match="positive label"):
        to_binary([1, 0], positive)


@pytest.mark.parametrize("bad", [[1, 2], {"a": 1}, (1,), b"1"])
def test_values_that_are_not_labels_are_an_error(bad: Any) -> None:
    with pytest.raises(ValueError, match="not a label"):
        to_binary([1, bad], 1)


def test_canonical_forms() -> None:
    assert canonical(True) == canonical(1) == canonical("1") == canonical(" 1e0 ") == 1.0
    assert canonical("False") == canonical(0) == 0.0
    assert canonical(" a b ") == "a b"
    assert canonical(float("inf")) == math.inf
    assert canonical(None) is None


def test_repeated_objects_and_many_values() -> None:
    rng = np.random.default_rng(0)
    pool: list[Raw] = [1, "1", True, 0, "0", False, None, "x", 1.0, NAN]
    truth = {0: 1, 1: 1, 2: 1, 3: 0, 4: 0, 5: 0, 6: -1, 7: 0, 8: 1, 9: -1}
    idx = rng.integers(0, len(pool), 50_000)
    out = to_binary([pool[i] for i in idx], 1)
    assert out.tolist() == [truth[int(i)] for i in idx]
