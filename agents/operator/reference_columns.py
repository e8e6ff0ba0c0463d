"""Which columns of reference data are features: the rules of ``driftline reference build``.

A column is profiled as a feature unless one of these rules leaves it out (the
first that applies names its role):

1. ``label``: the label column (``--label-column``, default ``label``). It is
   kept aside for the poisoning guard's trusted set, never profiled.
2. ``score`` / ``prediction``: the model's outputs (``--score-column``,
   ``--prediction-column``); profiled as the outputs ``@score`` and
   ``@prediction`` (prediction drift), not as features.
3. ``id``: named with ``--id-columns``, or named ``id``, ``request_id``,
   ``record_id``, ``event_id`` or ``uuid``.
4. ``timestamp``: named with ``--timestamp-column``, or named ``ts``,
   ``timestamp``, ``event_time``, ``time``, ``datetime`` or ``created_at``.
5. ``event field``: the other fields of the input events that are not
   features (``model``, ``model_version``, ``source``, ``variant``,
   ``latency_ms``, ``error``, ``segment``, ``probabilities``).
6. ``timestamp`` again: every value a date-time (Parquet), or text that reads
   as an ISO 8601 date or date-time (``2026-12-03``, ``2026-12-03T10:00:00Z``).
7. ``id`` again: text whose values are all different, at least
   ``MIN_ID_VALUES`` of them: one category per record is nothing a window can
   be compared on (each live value would be unseen).
8. ``no values``: a column that is empty in every record.

Names compare case-insensitively. ``--keep-columns`` profiles the named columns
whatever rules 3 to 7 say. Records that nest their features under ``features``
(as TrainingRecord and PredictionEvent do) have only those as candidates; their
other fields are left out under their role (``not under features`` if none).
Nothing left out reaches the profile, its multivariate part or the trusted
set's features.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from streams.batch import columns_from_rows
from streams.drift.state import PREDICTION, SCORE

logger = logging.getLogger(__name__)

ID_NAMES = frozenset({"id", "request_id", "record_id", "event_id", "uuid"})
TIME_NAMES = frozenset({"ts", "timestamp", "event_time", "time", "datetime", "created_at"})
EVENT_FIELDS = frozenset(
    {
        "model",
        "model_version",
        "source",
        "variant",
        "latency_ms",
        "error",
        "segment",
        "probabilities",
    }
)
#: Text columns with all values different and at least this many are identifiers.
MIN_ID_VALUES = 100


@dataclass(frozen=True)
class ColumnRoles:
    """The columns named on the command line; the rest follow the module's rules."""

    label: str = "label"
    score: str = "score"
    prediction: str = "prediction"
    ids: frozenset[str] = frozenset()
    timestamp: str | None = None
    keep: frozenset[str] = frozenset()

    def by_name(self, name: str) -> str | None:
        """The role ``name`` has by rules 1 to 5, or None."""
        low = name.lower()
        if name == self.label:
            return "label"
        if name in (self.score, self.prediction):
            return "score" if name == self.score else "prediction"
        if name in self.keep:
            return None
        if name in self.ids or low in ID_NAMES:
            return "id"
        if name == self.timestamp or low in TIME_NAMES:
            return "timestamp"
        if low in EVENT_FIELDS:
            return "event field"
        return None


@dataclass(frozen=True)
class SplitColumns:
    """The columns to profile (features, then ``@score``/``@prediction``) and the rest."""

    columns: dict[str, Sequence[Any]]
    left_out: dict[str, str] = field(default_factory=dict)  # name -> role


def split_columns(records: Sequence[dict[str, Any]], roles: ColumnRoles) -> SplitColumns:
    """The feature columns of ``records`` and the columns left out, with their roles.

    >>> split = split_columns([{"id": "r1", "x": 1.0, "label": 1, "score": 0.5}], ColumnRoles())
    >>> split.columns, split.left_out
    ({'@score': [0.5], 'x': [1.0]}, {'id': 'id', 'label': 'label'})
    """
    left_out: dict[str, str] = {}
    rows = []
    nested_seen = False
    for record in records:
        nested = record.get("features")
        if isinstance(nested, dict):
            nested_seen = True
            row = dict(nested)
        else:
            row = {k: v for k, v in record.items() if k != "features"}
        for name in list(row):
            role = roles.by_name(name)
            if role is not None:
                left_out.setdefault(name, role)
                del row[name]
        rows.append(row)
    if nested_seen:  # the fields beside ``features`` are not features
        for name in _names(records):
            if name != "features":
                left_out.setdefault(name, roles.by_name(name) or "not under features")
    columns = dict(columns_from_rows(rows))
    for name in list(columns):
        role = None if name in roles.keep else _role_by_values(columns[name])
        if role is None and all(v is None for v in columns[name]):
            role = "no values"
        if role is not None:
            left_out[name] = role
            del columns[name]
    for column, output in ((roles.score, SCORE), (roles.prediction, PREDICTION)):
        values = [record.get(column) for record in records]
        if any(v is not None for v in values):
            columns[output] = values
            left_out.pop(column, None)
    order = {name: i for i, name in enumerate(_names([*records, *rows]))}  # first seen
    in_file_order = dict(sorted(left_out.items(), key=lambda item: order.get(item[0], 0)))
    return SplitColumns(columns=dict(sorted(columns.items())), left_out=in_file_order)


def _names(records: Iterable[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for record in records:
        seen.update(dict.fromkeys(record))
    return list(seen)


def _role_by_values(values: Collection[Any]) -> str | None:
    """``timestamp`` or ``id`` by rules 6 and 7, else None."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    if all(isinstance(v, (datetime, date)) for v in present):
        return "timestamp"
    if not all(type(v) is str for v in present):
        return None
    if all(_is_time(v) for v in present):
        return "timestamp"
    if len(present) >= MIN_ID_VALUES and len(set(present)) == len(present):
        return "id"
    return None


def _is_time(text: str) -> bool:
    """ISO 8601 dates and date-times (a trailing ``Z`` too); at least ``YYYY-MM-DD``."""
    if len(text) < 10 or text[4:5] != "-":
        return False
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def describe(split: SplitColumns, roles: ColumnRoles) -> str:
    """``profiled: a, b; model outputs: score (@score); left out: request_id (id), ...``"""
    features = [n for n in split.columns if n not in (SCORE, PREDICTION)]
    outputs = [
        f"{column} ({output})"
        for column, output in ((roles.score, SCORE), (roles.prediction, PREDICTION))
        if output in split.columns
    ]
    parts = [f"profiled: {', '.join(features) or 'none'}"]
    if outputs:
        parts.append(f"model outputs: {', '.join(outputs)}")
    left = ", ".join(f"{name} ({role})" for name, role in split.left_out.items())
    parts.append(f"left out: {left or 'none'}")
    return "; ".join(parts)
