"""Schema, type and range of records against the model's reference profile.

Per feature the *support* says what a value may be: numeric features a range
(the reference's ``[lo, hi]`` widened on each side by ``range_margin`` times its
width: ``hi - lo``, or the reference standard deviation when larger, or
``max(|lo|, 1)`` for a constant feature; a value of a clean record lands beyond
the largest of ``n`` reference values about once in ``n``, so the margin must be
wide, and "far outside" means outside by a multiple of the range itself; and
a feature never negative in the reference may not turn negative, nor one never
positive turn positive), categorical features their known categories (only
for *closed* features: at most ``closed_category_limit`` known categories and
fewer than the profile's cap, so id-like features accept new values), and
whether a missing value happened in the reference at all. The support comes
from the ``ReferenceProfile`` of the model version when there is one (built on
the whole training file), else from the trusted set. Features the reference
does not know are not judged (the model does not read them); ``@score`` and
``@prediction`` are the model's outputs, not inputs.

Reasons, one or more per bad record: ``non_finite`` (NaN or infinity),
``wrong_type`` (text or a boolean for a numeric feature, a number for a
categorical one), ``out_of_range``, ``unknown_category``, ``missing_value``,
``unknown_label`` (a class the trusted set does not have).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from schemas.poisoning import PoisoningPolicy
from schemas.reference import ReferenceProfile
from streams.batch import Value, categorical_column, infer_kind, numeric_column
from streams.summaries.categorical import CategoricalSummary

Floats = npt.NDArray[np.float64]

_NUMBER_TYPES: frozenset[type] = frozenset({float, int, type(None)})

SCHEMA_REASONS = (
    "non_finite",
    "wrong_type",
    "out_of_range",
    "unknown_category",
    "missing_value",
    "unknown_label",
)


@dataclass(frozen=True)
class NumericSupport:
    lo: float
    hi: float
    std: float
    missing_ok: bool


@dataclass(frozen=True)
class CategoricalSupport:
    known: frozenset[str] | None  # None: open (any category is possible)
    missing_ok: bool


@dataclass(frozen=True)
class SchemaResult:
    """Per record: its schema reasons (empty when clean), how far out of range it is
    (the largest distance beyond ``[lo, hi]`` in widths of the range, 0 when not out of
    range), and a sentence about its first problem."""

    reasons: list[list[str]]
    range_excess: Floats
    details: list[str]


@dataclass(frozen=True)
class Support:
    numeric: dict[str, NumericSupport] = field(default_factory=dict)
    categorical: dict[str, CategoricalSupport] = field(default_factory=dict)
    labels: frozenset[str] | None = None  # the classes; None: labels are not judged

    @classmethod
    def from_profile(
        cls, profile: ReferenceProfile, policy: PoisoningPolicy, labels: frozenset[str] | None
    ) -> Support:
        numeric: dict[str, NumericSupport] = {}
        categorical: dict[str, CategoricalSupport] = {}
        for name, feat in profile.features.items():
            if name.startswith("@"):
                continue
            missing_ok = feat.missing > 0 or not policy.missing_is_violation
            if feat.kind == "numeric":
                numeric[name] = NumericSupport(feat.lo, feat.hi, feat.std, missing_ok)
            else:
                known = feat.known or [str(b) for b in feat.bins]
                closed = len(known) <= policy.closed_category_limit and len(known) < (
                    CategoricalSummary.MAX_CATEGORIES
                )
                categorical[name] = CategoricalSupport(
                    frozenset(known) if closed else None, missing_ok
                )
        return cls(numeric, categorical, labels)

    @classmethod
    def from_columns(
        cls,
        columns: Mapping[str, Sequence[Value]],
        policy: PoisoningPolicy,
        labels: frozenset[str] | None,
    ) -> Support:
        """The support seen in the trusted set itself (no profile)."""
        numeric: dict[str, NumericSupport] = {}
        categorical: dict[str, CategoricalSupport] = {}
        for name, values in columns.items():
            kind = infer_kind(values)
            missing_ok = any(v is None for v in values) or not policy.missing_is_violation
            if kind == "numeric":
                x = numeric_column(values)
                x = x[~np.isnan(x)]
                numeric[name] = NumericSupport(
                    float(x.min()), float(x.max()), float(x.std()), missing_ok
                )
            elif kind == "categorical":
                known = {v for v in categorical_column(values) if v is not None}
                closed = len(known) <= policy.closed_category_limit
                categorical[name] = CategoricalSupport(
                    frozenset(known) if closed else None, missing_ok
                )
        return cls(numeric, categorical, labels)


def range_width(num: NumericSupport) -> float:
    """The unit of "far outside": the range's width, or its standard deviation when larger,
    or ``max(|lo|, 1)`` for a constant feature.

    >>> range_width(NumericSupport(0.0, 10.0, 2.0, True)), range_width(
    ...     NumericSupport(5.0, 5.0, 0.0, True))
    (10.0, 5.0)
    """
    width = max(num.hi - num.lo, num.std)
    return width if width > 0 else max(abs(num.lo), 1.0)


def check_schema(
    columns: Mapping[str, Sequence[Value]],
    label_keys: Sequence[str],
    raw_labels: Sequence[bool | float | str],
    support: Support,
    *,
    margin: float,
) -> SchemaResult:
    """Judge ``n = len(label_keys)`` records given as columns (a missing column: all None).

    >>> sup = Support({"x": NumericSupport(0.0, 10.0, 2.0, False)}, {}, frozenset({"0", "1"}))
    >>> r = check_schema({"x": [5.0, 17.0, None, "7", -0.5]}, ["0", "1", "0", "2", "1"],
    ...                  [0, 1, 0, 2, 1], sup, margin=0.5)
    >>> r.reasons
    [[], ['out_of_range'], ['missing_value'], ['wrong_type', 'unknown_label'], ['out_of_range']]
    >>> r.range_excess.tolist()
    [0.0, 0.7, 0.0, 0.0, 0.05]
    """
    n = len(label_keys)
    reasons: list[list[str]] = [[] for _ in range(n)]
    details: list[str] = [""] * n
    excess = np.zeros(n, dtype=np.float64)

    def flag(i: int, reason: str, detail: str) -> None:
        if reason not in reasons[i]:
            reasons[i].append(reason)
        if not details[i]:
            details[i] = detail

    def column(name: str, missing_ok: bool) -> Sequence[Value] | None:
        """The feature's values, or None when no record has it (flagged unless allowed)."""
        values = columns.get(name)
        if values is None and not missing_ok:
            for i in range(n):
                flag(i, "missing_value", f"{name} is missing (never in the reference)")
        return values

    for name, num in support.numeric.items():
        values = column(name, num.missing_ok)
        if values is None:
            continue
        x = numeric_column(values)
        for i in np.flatnonzero(np.isnan(x)).tolist():
            v = values[i]
            if v is None:
                if not num.missing_ok:
                    flag(i, "missing_value", f"{name} is missing (never in the reference)")
            elif isinstance(v, float) and not math.isfinite(v):
                flag(i, "non_finite", f"{name}={v} is not a finite number")
            else:
                flag(i, "wrong_type", f"{name}={v!r} is not a number")
        if not set(map(type, values)) <= _NUMBER_TYPES:  # text or booleans among them
            for i, v in enumerate(values):
                if (v is True or v is False or isinstance(v, str)) and not np.isnan(x[i]):
                    flag(i, "wrong_type", f"{name}={v!r} is not a number")
        width = range_width(num)
        low, high = num.lo - margin * width, num.hi + margin * width
        if num.lo >= 0:  # never negative in the reference: a negative value is impossible
            low = max(low, 0.0)
        if num.hi <= 0:
            high = min(high, 0.0)
        with np.errstate(invalid="ignore"):
            over = np.maximum(low - x, x - high)
        out = np.flatnonzero(over > 0)
        if out.size:
            beyond = np.maximum(num.lo - x[out], x[out] - num.hi) / width
            excess[out] = np.maximum(excess[out], beyond)
            for i, e in zip(out.tolist(), beyond.tolist(), strict=True):
                flag(
                    i,
                    "out_of_range",
                    f"{name}={x[i]:.6g} is outside the reference range "
                    f"[{num.lo:.6g}, {num.hi:.6g}] by {e:.3g} times its width",
                )

    for name, cat in support.categorical.items():
        values = column(name, cat.missing_ok)
        if values is None:
            continue
        for i, v in enumerate(values):
            if v is None:
                if not cat.missing_ok:
                    flag(i, "missing_value", f"{name} is missing (never in the reference)")
            elif isinstance(v, float):
                flag(i, "wrong_type", f"{name}={v!r} is a number, the reference has categories")
        if cat.known is not None:
            known = cat.known
            for i, c in enumerate(categorical_column(values)):
                if c is not None and c not in known and not isinstance(values[i], float):
                    flag(i, "unknown_category", f"{name}={c!r} is not a known category")

    if support.labels is not None:
        for i, key in enumerate(label_keys):
            raw = raw_labels[i]
            if isinstance(raw, float) and not math.isfinite(raw):
                flag(i, "non_finite", f"label {raw} is not a finite number")
            elif key not in support.labels:
                flag(i, "unknown_label", f"label {raw!r} is not a class of the trusted set")
    return SchemaResult(reasons=reasons, range_excess=excess, details=details)
