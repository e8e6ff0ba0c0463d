"""A feature's reference distribution, built from the warm-up summaries.

Numeric: ``fine_bins`` quantile bins (for KS and Wasserstein), grouped into
about ``bins`` PSI bins of equal reference mass; the range and standard
deviation (from the sketch, 1 % accurate) scale the Wasserstein distance.
Categorical: the ``top_k`` categories plus "other"; every category seen in the
warm-up (at most ``CategoricalSummary.MAX_CATEGORIES``) is *known*, the rest
count as unseen. The multivariate signal's reference (a PCA and its held-out
baseline) is built by ``streams.drift.multivariate``; ``profile_multivariate``
builds it from a file with the same code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypedDict

import numpy as np
import numpy.typing as npt

from streams.batch import (
    Categories,
    Kind,
    Value,
    anchor_of,
    categorical_column,
    infer_kind,
    numeric_column,
)
from streams.drift.multivariate import (
    LIMITS_SAMPLE,
    SLOTS,
    PcaReference,
    add_events,
    assign_slots,
    choose_categorical,
    choose_features,
    empty_halves,
    fit,
    indicators,
    limits_of,
    matrix,
)
from streams.summaries.categorical import CategoricalState, CategoricalSummary
from streams.summaries.numeric import NumericState, NumericSummary


class ReferenceFeature(TypedDict):
    kind: Kind
    bins: list[float] | list[str]  # numeric: interior edges; categorical: categories
    counts: list[int]
    missing: int
    groups: list[int]  # numeric: PSI bin of each fine bin; categorical: empty
    known: list[str]  # categorical: every category seen; numeric: empty
    lo: float  # numeric range and standard deviation; 0.0 for categorical
    hi: float
    std: float


def psi_groups(counts: npt.ArrayLike, bins: int) -> list[int]:
    """Group consecutive fine bins into about ``bins`` bins of equal reference mass.

    A fine bin goes to the group where the middle of its mass falls, so a bin
    holding a large share (an atom) stays whole.

    >>> psi_groups([10] * 10, 5)
    [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    >>> psi_groups([1, 80, 1, 9, 9], 4)
    [0, 1, 2, 2, 2]
    """
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    if total <= 0:
        return [0] * c.size
    mid = (np.cumsum(c) - c / 2) / total
    raw = np.minimum((mid * bins).astype(np.int64), bins - 1)
    # renumber 0, 1, 2, ... so that empty groups do not count as bins
    renumbered: list[int] = np.unique(raw, return_inverse=True)[1].astype(int).tolist()
    return renumbered


def numeric_reference(
    summary: NumericSummary, state: NumericState, *, bins: int, fine_bins: int
) -> ReferenceFeature:
    edges = summary.quantile_edges(state, fine_bins)
    counts = summary.bin_counts(state, edges)
    std = summary.sketch.mean_std(state["sketch"])[1] if state["sketch"] else 0.0
    lo, hi = state.get("lo"), state.get("hi")
    return {
        "kind": "numeric",
        "bins": edges.tolist(),
        "counts": counts.tolist(),
        "missing": state["missing"],
        "groups": psi_groups(counts, bins),
        "known": [],
        "lo": float(lo) if lo is not None else 0.0,
        "hi": float(hi) if hi is not None else 0.0,
        "std": std,
    }


def categorical_reference(state: CategoricalState, *, top_k: int) -> ReferenceFeature:
    top = CategoricalSummary.top_categories(state, top_k)
    return {
        "kind": "categorical",
        "bins": top,
        "counts": CategoricalSummary.bin_counts(state, top).astype(np.int64).tolist(),
        "missing": state["missing"],
        "groups": [],
        "known": sorted(state["counts"]),
        "lo": 0.0,
        "hi": 0.0,
        "std": 0.0,
    }


def profile_features(
    columns: Mapping[str, Sequence[Value]], *, bins: int, fine_bins: int, top_k: int
) -> dict[str, ReferenceFeature]:
    """Reference features from whole columns of training data (a file, not a stream).

    Kinds are inferred as the monitor does: numbers numeric, strings and booleans
    categorical; a column with no values is left out.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> f = profile_features({"x": rng.normal(size=1000), "c": ["a", "b"] * 500},
    ...                      bins=10, fine_bins=100, top_k=5)
    >>> f["x"]["kind"], sum(f["x"]["counts"]), f["c"]["bins"]
    ('numeric', 1000, ['a', 'b'])
    """
    numeric = NumericSummary()
    categorical = CategoricalSummary()
    out: dict[str, ReferenceFeature] = {}
    for name, values in columns.items():
        kind = infer_kind(values)
        if kind == "numeric":
            st = numeric.update(
                numeric.initialize(), numeric_column(values), None, anchor=anchor_of(values)
            )
            out[name] = numeric_reference(numeric, st, bins=bins, fine_bins=fine_bins)
        elif kind == "categorical":
            cst = categorical.update(categorical.initialize(), categorical_column(values))
            out[name] = categorical_reference(cst, top_k=top_k)
    return out


def profile_multivariate(
    columns: Mapping[str, Sequence[Value]],
    *,
    exclude: frozenset[str] = frozenset(),
    max_features: int,
    variance: float,
) -> PcaReference | None:
    """The multivariate reference of whole columns of training data (a file).

    The same code as the stream's warm-up: the first ``max_features`` numeric
    columns by name and the first ``MAX_CATEGORICAL`` categorical ones (``exclude``
    holds the model's outputs and the features the policy ignores), the rows in
    file order split even/odd into halves A and B, numeric values clipped to the
    limits of the column's first values and summed minus the column's anchor, a
    missing value imputed with the mean of the values above it, a categorical
    column counted as indicators of its first ``SLOTS`` categories in file order.
    None with fewer than two columns that vary.

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=2000)
    >>> ref = profile_multivariate(
    ...     {"a": x, "b": x + rng.normal(0, 0.5, 2000), "c": ["u"] * 2000},
    ...     max_features=30, variance=0.65)
    >>> ref["names"], len(ref["components"]), round(ref["baseline"], 2)
    (['a', 'b'], 1, 0.11)
    """
    kinds = {n: infer_kind(v) for n, v in columns.items() if n not in exclude}
    names = choose_features([n for n, k in kinds.items() if k == "numeric"], max_features)
    cats = choose_categorical([n for n, k in kinds.items() if k == "categorical"])
    if len(names) + len(cats) < 2:
        return None
    n = len(columns[(names or cats)[0]])
    parts = [matrix([numeric_column(columns[name]) for name in names], n)]
    slots: dict[str, list[str]] = {}
    for name in cats:
        column = categorical_column(columns[name])
        values = column.values() if isinstance(column, Categories) else list(column)
        slots[name] = assign_slots([], values)
        parts.append(indicators(slots[name], values))
    halves = empty_halves(
        [anchor_of(columns[name]) for name in names] + [0.0] * (SLOTS * len(cats)),
        [limits_of(numeric_column(columns[name][:LIMITS_SAMPLE])) for name in names]
        + [None] * (SLOTS * len(cats)),
        categorical=len(cats),
    )
    x = np.hstack(parts) if len(parts) > 1 else parts[0]
    return fit(names, add_events(halves, x, offset=0), variance=variance, categorical=slots)
