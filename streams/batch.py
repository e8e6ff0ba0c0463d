"""A batch of events as columns: the unit every kernel works on."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Value = bool | int | float | str | None
Kind = Literal["numeric", "categorical"]


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
        >>> list(b.columns["b"])
        [None, 'x']
        """
        names = sorted(set().union(*rows)) if rows else []
        columns: dict[str, Sequence[Value]]
        if len(names) > 1:
            pick = itemgetter(*names)
            try:  # every event carries every feature: transpose at C speed
                columns = dict(
                    zip(names, zip(*[pick(row) for row in rows], strict=True), strict=True)
                )
            except KeyError:
                columns = {name: [row.get(name) for row in rows] for name in names}
        else:
            columns = {name: [row.get(name) for row in rows] for name in names}
        return cls(ts_ms=np.asarray(ts_ms, dtype=np.int64), columns=columns)

    def select(self, mask: npt.NDArray[np.bool_]) -> FeatureBatch:
        """The events where ``mask`` is true."""
        idx = np.flatnonzero(mask).tolist()
        columns = {name: [col[i] for i in idx] for name, col in self.columns.items()}
        return FeatureBatch(ts_ms=self.ts_ms[idx], columns=columns)


def numeric_column(values: Sequence[Value] | npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """Numbers as float64. None, non-numeric strings and non-finite values become NaN;
    booleans count as 1 and 0, strings that spell a number as that number.

    One vectorised conversion when it can (the common case), value by value only
    when a column holds text.

    >>> numeric_column([1, 2.5, None, "x", True, float("inf"), "7"]).tolist()
    [1.0, 2.5, nan, nan, 1.0, nan, 7.0]
    """
    try:
        arr = np.array(values, dtype=np.float64)
    except (ValueError, TypeError):
        arr = np.fromiter((_to_float(v) for v in values), dtype=np.float64, count=len(values))
    arr[~np.isfinite(arr)] = np.nan
    return arr


def _to_float(value: Value) -> float:
    try:
        return float(value) if value is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


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


def infer_kind(values: Sequence[Value]) -> Kind | None:
    """Numbers are numeric; strings and booleans categorical; all-None says nothing.

    >>> infer_kind([None, 3.5]), infer_kind(["a"]), infer_kind([True]), infer_kind([None])
    ('numeric', 'categorical', 'categorical', None)
    >>> infer_kind(np.array([1.5, 2.0]))
    'numeric'
    """
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
        return "numeric" if values.size else None
    for v in values:
        if v is None:
            continue
        return "numeric" if type(v) is float or type(v) is int else "categorical"
    return None
