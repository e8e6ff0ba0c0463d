"""Records as a numeric matrix, encoded the way the trusted set is.

Numeric features are standardised with the trusted set's mean and standard
deviation (a constant feature keeps the scale 1); a missing or non-finite value
becomes the mean (0) and values are clipped to ``±CLIP`` standard deviations, so
that one absurd value (which the schema check quarantines anyway) cannot
dominate every distance. A categorical feature becomes one-hot columns for its
``max_categories`` most frequent trusted values, each ``1/sqrt(2)``, so that two
different categories are at distance 1, like one standard deviation; an unseen
category is all zeros. Columns are ordered by feature name, numeric features
first by name, then the categories; at most ``max_features`` columns.

Labels are compared by :func:`label_key`: ``1``, ``1.0`` and ``"1"`` are the
same class, ``True`` is ``"true"``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streams.batch import Value, categorical_column, infer_kind, numeric_column

Floats = npt.NDArray[np.float64]

#: Standardised values are clipped to this many standard deviations.
CLIP = 50.0
_ONE_HOT = 1.0 / math.sqrt(2.0)


def label_key(label: bool | float | int | str) -> str:
    """The class a label names, as a string.

    >>> [label_key(v) for v in (True, 1, 1.0, "1", 2.5, "fraud")]
    ['true', '1', '1', '1', '2.5', 'fraud']
    """
    if label is True or label is False:
        return "true" if label else "false"
    if isinstance(label, int | float):
        number = float(label)
        if math.isfinite(number) and number.is_integer():
            return str(int(number))
        return repr(number)
    return str(label)


@dataclass(frozen=True)
class Encoder:
    """How to turn feature columns into the standardised matrix (see the module doc)."""

    numeric: tuple[str, ...]
    means: Floats
    scales: Floats
    categorical: tuple[tuple[str, tuple[str, ...]], ...]  # (feature, its one-hot categories)

    @property
    def width(self) -> int:
        return len(self.numeric) + sum(len(cats) for _, cats in self.categorical)

    @property
    def columns(self) -> list[str]:
        """Names of the encoded columns, e.g. ``amount`` and ``country=FR``."""
        out = list(self.numeric)
        for name, cats in self.categorical:
            out.extend(f"{name}={c}" for c in cats)
        return out

    @classmethod
    def fit(
        cls,
        columns: Mapping[str, Sequence[Value]],
        *,
        max_features: int,
        max_categories: int,
    ) -> Encoder:
        """Fit on the trusted set's columns; a column without any value is left out.

        >>> enc = Encoder.fit({"x": [1.0, 3.0], "c": ["a", "b"]}, max_features=10,
        ...                   max_categories=5)
        >>> enc.columns, enc.means.tolist(), enc.scales.tolist()
        (['x', 'c=a', 'c=b'], [2.0], [1.0])
        """
        numeric: list[str] = []
        categorical: list[str] = []
        for name in sorted(columns):
            kind = infer_kind(columns[name])
            if kind == "numeric":
                numeric.append(name)
            elif kind == "categorical":
                categorical.append(name)
        numeric = numeric[:max_features]
        means: list[float] = []
        scales: list[float] = []
        for name in numeric:
            x = numeric_column(columns[name])
            x = x[~np.isnan(x)]
            means.append(float(x.mean()) if x.size else 0.0)
            sd = float(x.std()) if x.size else 0.0
            scales.append(sd if sd > 0 else 1.0)
        room = max_features - len(numeric)
        cats: list[tuple[str, tuple[str, ...]]] = []
        for name in categorical:
            if room <= 0:
                break
            counts = Counter(v for v in categorical_column(columns[name]) if v is not None)
            # most frequent first, ties by value: the same trusted set gives the same columns
            top = sorted(counts, key=lambda c: (-counts[c], c))[: min(max_categories, room)]
            cats.append((name, tuple(sorted(top))))
            room -= len(top)
        return cls(
            numeric=tuple(numeric),
            means=np.asarray(means, dtype=np.float64),
            scales=np.asarray(scales, dtype=np.float64),
            categorical=tuple(cats),
        )

    def encode(self, columns: Mapping[str, Sequence[Value]], n: int) -> Floats:
        """The ``n x width`` matrix of ``n`` records' columns (a missing column: all missing).

        >>> enc = Encoder.fit({"x": [1.0, 3.0], "c": ["a", "b"]}, max_features=10,
        ...                   max_categories=5)
        >>> enc.encode({"x": [3.0, None], "c": ["b", "zz"]}, 2).round(3).tolist()
        [[1.0, 0.0, 0.707], [0.0, 0.0, 0.0]]
        """
        out = np.zeros((n, self.width), dtype=np.float64)
        for j, name in enumerate(self.numeric):
            values = columns.get(name)
            if values is None:
                continue
            z = (numeric_column(values) - self.means[j]) / self.scales[j]
            out[:, j] = np.clip(np.nan_to_num(z, nan=0.0), -CLIP, CLIP)
        j = len(self.numeric)
        for name, cats in self.categorical:
            values = columns.get(name)
            if values is not None:
                position = {c: i for i, c in enumerate(cats)}
                for row, v in enumerate(categorical_column(values)):
                    i = position.get(v) if v is not None else None
                    if i is not None:
                        out[row, j + i] = _ONE_HOT
            j += len(cats)
        return out
