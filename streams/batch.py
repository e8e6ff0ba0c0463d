"""A batch of events as columns: the unit every kernel works on."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from typing import Any, Literal, cast, overload

import numpy as np
import numpy.typing as npt

Value = bool | int | float | str | None
Kind = Literal["numeric", "categorical"]


@dataclass(frozen=True, eq=False)
class Categories(Sequence[str | None]):
    """A categorical column as integer codes into ``names`` (-1: no value), as Arrow's
    dictionary arrays carry it: counted with ``bincount`` instead of hashing strings.
    Reads as the sequence of its values.

    >>> c = Categories(np.array([1, -1, 0, 1], dtype=np.int32), ("app", "web"))
    >>> list(c), len(c), list(c.take(np.array([3, 2])))
    (['web', None, 'app', 'web'], 4, ['web', 'app'])
    """

    codes: npt.NDArray[np.int32]
    #: distinct names (a column whose dictionary repeats a name is given as strings)
    names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    @overload
    def __getitem__(self, i: int) -> str | None: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[str | None]: ...
    def __getitem__(self, i: int | slice) -> str | Sequence[str | None] | None:
        if isinstance(i, slice):
            return Categories(self.codes[i], self.names)
        code = int(self.codes[i])
        return None if code < 0 else self.names[code]

    def take(self, idx: npt.NDArray[np.intp]) -> Categories:
        return Categories(self.codes[idx], self.names)

    def values(self) -> list[str | None]:
        """The column as strings (None: no value)."""
        lookup = [*self.names, None]  # code -1 reads the last
        return [lookup[c] for c in self.codes.tolist()]


Column = Sequence[Value] | npt.NDArray[Any] | Categories


@dataclass(frozen=True)
class FeatureBatch:
    """Events of one model version as columns of equal length.

    ``columns`` maps a feature name to the raw values of the batch's events,
    with ``None`` where an event did not carry the feature; or, from a columnar
    input, to a float64 array (NaN: no value) or ``Categories``.
    """

    ts_ms: npt.NDArray[np.int64]
    columns: Mapping[str, Column] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])

    @classmethod
    def from_rows(cls, ts_ms: Sequence[int], rows: Sequence[Mapping[str, Value]]) -> FeatureBatch:
        """Columns from per-event feature dicts; a missing key becomes None.

        >>> b = FeatureBatch.from_rows([1000, 2000], [{"a": 1.0}, {"a": 2.0, "b": "x"}])
        >>> list(b.columns["b"])
        [None, 'x']
        """
        return cls(ts_ms=np.asarray(ts_ms, dtype=np.int64), columns=columns_from_rows(rows))

    def slice(self, start: int, stop: int) -> FeatureBatch:
        """The events ``start`` to ``stop`` (views of arrays, not copies).

        >>> b = FeatureBatch(np.array([1, 2, 3]), {"x": np.array([1.0, 2.0, 3.0]), "c": [1, 2, 3]})
        >>> part = b.slice(1, 3)
        >>> part.ts_ms.tolist(), part.columns["x"].tolist(), part.columns["c"]
        ([2, 3], [2.0, 3.0], [2, 3])
        """
        return FeatureBatch(ts_ms=self.ts_ms[start:stop], columns={
            name: Categories(col.codes[start:stop], col.names) if isinstance(col, Categories)
            else col[start:stop]
            for name, col in self.columns.items()})

    def select(self, mask: npt.NDArray[np.bool_]) -> FeatureBatch:
        """The events where ``mask`` is true."""
        idx = np.flatnonzero(mask)
        return FeatureBatch(ts_ms=self.ts_ms[idx], columns={
            name: take(col, idx) for name, col in self.columns.items()})


def _form(column: Column) -> object:
    """What ``concat`` needs alike in two columns: arrays of one dtype, categories, or
    plain values."""
    if isinstance(column, np.ndarray):
        return column.dtype
    if isinstance(column, Categories):
        return Categories
    return list


def same_columns(a: FeatureBatch, b: FeatureBatch) -> bool:
    """Whether ``concat`` can join the two: the same names, each column in the same form.

    >>> one = FeatureBatch(np.array([1]), {"x": np.array([1.0]), "c": ["a"]})
    >>> two = FeatureBatch(np.array([2]), {"x": np.array([2.0]), "c": ("b",)})
    >>> same_columns(one, two), same_columns(one, FeatureBatch(np.array([3]), {"x": [3.0]}))
    (True, False)
    """
    if a.columns.keys() != b.columns.keys():
        return False
    return all(_form(col) == _form(b.columns[name]) for name, col in a.columns.items())


def concat(batches: Sequence[FeatureBatch]) -> FeatureBatch:
    """The events of ``batches`` in order, as one batch (``same_columns`` for each pair).

    >>> c = Categories(np.array([0, 1], dtype=np.int32), ("a", "b"))
    >>> one = FeatureBatch(np.array([1, 2]), {"x": np.array([1.0, 2.0]), "c": c})
    >>> two = FeatureBatch(np.array([3]), {"x": np.array([3.0]), "c": c.take(np.array([1]))})
    >>> b = concat([one, two])
    >>> b.ts_ms.tolist(), b.columns["x"].tolist(), list(b.columns["c"])
    ([1, 2, 3], [1.0, 2.0, 3.0], ['a', 'b', 'b'])
    """
    if len(batches) == 1:
        return batches[0]
    first = batches[0]
    columns: dict[str, Column] = {}
    for name, col in first.columns.items():
        parts = [b.columns[name] for b in batches]
        if isinstance(col, np.ndarray):
            columns[name] = np.concatenate(cast(list[npt.NDArray[Any]], parts))
        elif isinstance(col, Categories):
            columns[name] = _concat_categories(cast(list[Categories], parts))
        else:
            columns[name] = list(chain.from_iterable(cast(list[Sequence[Value]], parts)))
    return FeatureBatch(ts_ms=np.concatenate([b.ts_ms for b in batches]), columns=columns)


def _concat_categories(parts: list[Categories]) -> Categories:
    """One column of categories; each part's codes mapped into the names of all parts
    (in order of first appearance), as each message's Arrow dictionary is its own.

    >>> a = Categories(np.array([0, 1, -1], dtype=np.int32), ("x", "y"))
    >>> b = Categories(np.array([1, 0], dtype=np.int32), ("z", "x"))
    >>> c = _concat_categories([a, b])
    >>> c.names, c.codes.tolist(), list(c)
    (('x', 'y', 'z'), [0, 1, -1, 0, 2], ['x', 'y', None, 'x', 'z'])
    """
    first = parts[0].names
    if all(p.names == first for p in parts):
        return Categories(np.concatenate([p.codes for p in parts]), first)
    index: dict[str, int] = {}
    codes = []
    for p in parts:
        # the last entry maps code -1 (no value) to -1
        lookup = np.array([index.setdefault(n, len(index)) for n in p.names] + [-1], np.int32)
        codes.append(lookup[p.codes])
    return Categories(np.concatenate(codes), tuple(index))


def take(column: Column, idx: npt.NDArray[np.intp]) -> Column:
    """The values of ``column`` at ``idx``, in the column's own form.

    >>> take([1, None, 3], np.array([0, 2])), take(np.array([1.0, 2.0]), np.array([1]))
    ([1, 3], array([2.]))
    """
    if isinstance(column, np.ndarray):
        return column[idx]
    if isinstance(column, Categories):
        return column.take(idx)
    return [column[i] for i in idx.tolist()]


def columns_from_rows(rows: Sequence[Mapping[str, Value]]) -> dict[str, Sequence[Value]]:
    """Rows of ``{name: value}`` as columns (sorted names); a missing key becomes None.

    >>> columns_from_rows([{"a": 1.0}, {"a": 2.0, "b": "x"}])
    {'a': [1.0, 2.0], 'b': [None, 'x']}
    >>> columns_from_rows([{"a": 1, "b": 2}, {"c": 3, "a": 4}])  # one size, other names
    {'a': [1, 4], 'b': [2, None], 'c': [None, 3]}
    """
    if not rows:
        return {}
    width = len(rows[0])
    if width > 1 and set(map(len, rows)) == {width}:
        names = sorted(rows[0])
        try:  # rows of one size that all carry the first's names: transpose at C speed
            return dict(zip(names, zip(*map(itemgetter(*names), rows), strict=True), strict=True))
        except KeyError:
            pass  # the same size, other names
    names = sorted(set().union(*rows))
    return {name: [row.get(name) for row in rows] for name in names}


def numeric_column(values: Column) -> npt.NDArray[np.float64]:
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


def numeric_matrix(columns: Sequence[Column | None], n: int) -> npt.NDArray[np.float64]:
    """Columns of ``n`` values as the rows of one float64 matrix, read as
    ``numeric_column`` reads each; a None column is all NaN.

    >>> numeric_matrix([[1, None], None, ["x", "2"]], 2).tolist()
    [[1.0, nan], [nan, nan], [nan, 2.0]]
    """
    if not columns:
        return np.empty((0, n))
    nothing = (None,) * n
    rows = [nothing if c is None else c for c in columns]
    try:  # one conversion for the common case: numbers and None
        matrix = np.array(rows, dtype=np.float64)
    except (ValueError, TypeError):
        return np.array([numeric_column(c) for c in rows]).reshape(len(rows), n)
    matrix[~np.isfinite(matrix)] = np.nan
    return matrix


def _to_float(value: Value) -> float:
    try:
        return float(value) if value is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


_TEXT = {str, type(None)}


def categorical_column(values: Iterable[Value] | Categories) -> list[str | None] | Categories:
    """Categories as strings (booleans as ``true``/``false``); None stays None.
    ``Categories`` stay as they are (codes); numbers from an array read as in a list.

    >>> categorical_column(["a", True, 3, None])
    ['a', 'true', '3', None]
    >>> categorical_column(np.array([1.5, np.nan]))
    ['1.5', None]
    """
    if isinstance(values, Categories):
        return values
    if isinstance(values, np.ndarray):  # floats from a columnar input: NaN is no value
        values = [None if v != v else v for v in values.tolist()]
    values = list(values)
    if set(map(type, values)) <= _TEXT:  # the common case, checked at C speed
        return cast(list[str | None], values)
    out: list[str | None] = []
    for v in values:
        if v is None:
            out.append(None)
        elif v is True or v is False:
            out.append("true" if v else "false")
        else:
            out.append(str(v))
    return out


def infer_kind(values: Column) -> Kind | None:
    """Numbers are numeric; strings and booleans categorical; all-None says nothing.

    >>> infer_kind([None, 3.5]), infer_kind(["a"]), infer_kind([True]), infer_kind([None])
    ('numeric', 'categorical', 'categorical', None)
    >>> infer_kind(np.array([1.5, 2.0]))
    'numeric'
    """
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
        return "numeric" if values.size and not np.isnan(values).all() else None
    if isinstance(values, Categories):
        return "categorical" if (values.codes >= 0).any() else None
    for v in values:
        if v is None:
            continue
        return "numeric" if type(v) is float or type(v) is int else "categorical"
    return None


#: Values whose median anchors a numeric feature's warm-up sketch.
ANCHOR_SAMPLE = 64


def anchor_of(values: Column) -> float:
    """A typical value of a numeric feature: the median of its first ``ANCHOR_SAMPLE`` values.

    Taken from the first message that carries the feature; using only its first
    values keeps the anchor (and so the bins) the same however producers batch,
    as long as batches hold at least ``ANCHOR_SAMPLE`` events.

    The median of two values near the float limit overflows (their mean); the
    lower middle value is taken then, which is always finite.

    >>> anchor_of([2019, 2021, None, 2020.0])
    2020.0
    >>> anchor_of([-1e308, -1e308])
    -1e+308
    """
    finite = numeric_column(values[:ANCHOR_SAMPLE])
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return 0.0
    with np.errstate(over="ignore"):
        middle = float(np.median(finite))
    return middle if math.isfinite(middle) else float(np.sort(finite)[(finite.size - 1) // 2])
