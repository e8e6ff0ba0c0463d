"""Raw labels and predictions (bool, number or string) as 0/1 for a positive label.

Serving apps and label sources send ``prediction`` and ``label`` as JSON values:
``true``, ``1``, ``1.0``, ``"1"`` and ``"fraud"`` all occur. Binary KPIs need
0/1, so every raw value and the configured positive label are put in one
canonical form and compared there:

* ``None``, NaN, and blank strings are *missing*: ``-1``. The KPI accumulators
  refuse ``-1``, so the caller drops those rows (and says so) instead of
  silently counting them as negatives.
* bools are the numbers 1 and 0 (``True == 1``, as in Python and JSON
  consumers generally);
* numbers compare by value (``1 == 1.0``);
* a string that spells a number is that number (``"1"``, ``" 1.0 "``), and
  ``"true"``/``"false"`` in any case are 1 and 0: producers that render JSON
  through text (CSV exports, form encoders) send these;
* any other string compares exactly after stripping surrounding whitespace,
  case-sensitive like class labels everywhere else (``"Fraud" != "fraud"``).

Everything that is not missing and not the positive label is ``0``: with more
than two classes this is one-vs-rest for the positive class. Values that are
not a bool, number, string or None (a list, a dict) raise ``ValueError``.

Cost: one vectorised comparison for a numeric numpy array; otherwise one
dictionary look-up per value (distinct raw values are canonicalised once per
batch), some twenty times slower per value than the numeric array's path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

Raw = bool | int | float | str | None
Positive = bool | int | float | str

MISSING = -1


def canonical(value: object) -> float | str | None:
    """The form values are compared in: a float, a stripped string, or None (missing).

    >>> [canonical(v) for v in [True, 1, 1.0, "1", " 1.0 ", "TRUE", "no", "", None]]
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 'no', None, None]
    """
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return 1.0 if value else 0.0
    if isinstance(value, int | float | np.integer | np.floating):
        f = float(value)
        return None if math.isnan(f) else f
    if isinstance(value, str):
        s = value.strip()
        if not s:
            return None
        try:
            f = float(s)
        except ValueError:
            low = s.lower()
            return 1.0 if low == "true" else 0.0 if low == "false" else s
        return None if math.isnan(f) else f
    raise ValueError(f"{value!r} is not a label: expected a bool, number, string or null")


def to_binary(
    values: Sequence[Raw] | npt.NDArray[Any], positive: Positive
) -> npt.NDArray[np.int8]:
    """1 where a value is the positive label, 0 where it is another value, -1 where missing.

    >>> to_binary([1, 1.0, True, "1", "1.0", 0, False, "0", 2, None, float("nan")], 1).tolist()
    [1, 1, 1, 1, 1, 0, 0, 0, 0, -1, -1]
    >>> to_binary(["fraud", " fraud", "Fraud", "ok", ""], "fraud").tolist()
    [1, 1, 0, 0, -1]
    >>> to_binary(np.array([0.0, 1.0, np.nan]), True).tolist()
    [0, 1, -1]
    """
    key = canonical(positive)
    if key is None:
        raise ValueError(f"the positive label {positive!r} is missing (None, NaN or blank)")
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        f = values.astype(np.float64, copy=False)
        out = np.where(f == key, 1, 0).astype(np.int8) if isinstance(key, float) else (
            np.zeros(f.shape, dtype=np.int8)
        )
        out[np.isnan(f)] = MISSING
        return out
    memo: dict[object, int] = {}

    def code(value: object) -> int:
        try:
            return memo[value]
        except KeyError:
            pass
        except TypeError:  # unhashable: canonical() says why it is not a label
            canonical(value)
        c = canonical(value)
        got = MISSING if c is None else int(c == key)
        memo[value] = got
        return got

    return np.fromiter((code(v) for v in values), dtype=np.int8, count=len(values))
