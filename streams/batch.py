"""A batch of events as columns: the unit every kernel works on."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

Value = bool | int | float | str | None


@dataclass(frozen=True)
class FeatureBatch:
    """Events of one model version as columns of equal length.

    ``columns`` maps a feature name to the raw values of the batch's events,
    with ``None`` where an event did not carry the feature.
    """

    ts_ms: npt.NDArray[np.int64]
    columns: Mapping[str, Sequence[Value]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])

    @classmethod
    def from_rows(cls, ts_ms: Sequence[int], rows: Sequence[Mapping[str, Value]]) -> FeatureBatch:
        """Columns from per-event feature dicts; a missing key becomes None.

        >>> b = FeatureBatch.from_rows([1000, 2000], [{"a": 1.0}, {"a": 2.0, "b": "x"}])
        >>> b.columns["b"]
        [None, 'x']
        """
        names: dict[str, None] = {}
        for row in rows:
            names.update(dict.fromkeys(row))
        columns = {name: [row.get(name) for row in rows] for name in names}
        return cls(ts_ms=np.asarray(ts_ms, dtype=np.int64), columns=columns)

    def select(self, mask: npt.NDArray[np.bool_]) -> FeatureBatch:
        """The events where ``mask`` is true."""
        idx = np.flatnonzero(mask).tolist()
        columns = {name: [col[i] for i in idx] for name, col in self.columns.items()}
        return FeatureBatch(ts_ms=self.ts_ms[idx], columns=columns)


def numeric_column(values: Iterable[Value]) -> npt.NDArray[np.float64]:
    """Numbers as float64; None, booleans, strings and non-finite values become NaN.

    >>> numeric_column([1, 2.5, None, "x", True, float("inf")]).tolist()
    [1.0, 2.5, nan, nan, nan, nan]
    """
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
        arr = values.astype(np.float64)  # already numbers: one vectorised copy
        arr[~np.isfinite(arr)] = np.nan
        return arr
    nan = float("nan")
    arr = np.fromiter(
        (v if type(v) is float or type(v) is int else nan for v in values), dtype=np.float64
    )
    arr[~np.isfinite(arr)] = np.nan
    return arr


def categorical_column(values: Iterable[Value]) -> list[str | None]:
    """Categories as strings (booleans as ``true``/``false``); None stays None.

    >>> categorical_column(["a", True, 3, None])
    ['a', 'true', '3', None]
    """
    out: list[str | None] = []
    for v in values:
        if v is None:
            out.append(None)
        elif v is True or v is False:
            out.append("true" if v else "false")
        else:
            out.append(str(v))
    return out
