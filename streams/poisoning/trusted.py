"""Building a trusted set: a bounded, stratified, seeded sample of clean training data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from schemas.events import TrainingRecord
from schemas.poisoning import TrustedSet
from streams.batch import Value, columns_from_rows
from streams.poisoning.encode import label_key

#: Classes that get a stratified share; labels with more distinct values (a
#: regression target) are sampled at random.
STRATIFY_MAX_CLASSES = 1000


def sample_rows(labels: Sequence[bool | float | str], max_rows: int, seed: int = 0) -> list[int]:
    """Row numbers of a sample of at most ``max_rows``, in their original order.

    Every class keeps its share (largest remainder) and at least two rows when it
    has them, so that each class has a neighbour to calibrate on.

    >>> rows = sample_rows(["a"] * 90 + ["b"] * 10, 20)
    >>> len(rows), sum(r >= 90 for r in rows)
    (20, 2)
    >>> sample_rows(["a", "b", "a"], 10)
    [0, 1, 2]
    """
    n = len(labels)
    if n <= max_rows:
        return list(range(n))
    rng = np.random.default_rng(seed)
    keys = np.asarray([label_key(v) for v in labels], dtype=object)
    classes = sorted(set(keys.tolist()))
    if len(classes) > STRATIFY_MAX_CLASSES:
        return sorted(rng.choice(n, size=max_rows, replace=False).tolist())
    members = {c: np.flatnonzero(keys == c) for c in classes}
    exact = {c: max_rows * members[c].size / n for c in classes}
    quota = {c: max(min(members[c].size, 2), int(exact[c])) for c in classes}
    spare = max_rows - sum(quota.values())
    for c in sorted(classes, key=lambda c: (-(exact[c] - int(exact[c])), c)):
        if spare <= 0:
            break
        if quota[c] < members[c].size:
            quota[c] += 1
            spare -= 1
    while spare < 0:  # the two-row floors overshot: take from the largest class
        largest = max(classes, key=lambda c: (quota[c], c))
        quota[largest] -= 1
        spare += 1
    chosen: list[int] = []
    for c in classes:
        chosen.extend(rng.choice(members[c], size=quota[c], replace=False).tolist())
    return sorted(chosen)


def sample_trusted(
    model: str,
    columns: Mapping[str, Sequence[Value]],
    labels: Sequence[bool | float | str],
    *,
    max_rows: int,
    seed: int = 0,
    source: str = "",
    model_version: str | None = None,
) -> TrustedSet:
    """A trusted set from whole columns of clean training data (e.g. a file).

    >>> t = sample_trusted("m", {"x": [1.0, 2.0, 3.0, 4.0]}, [0, 0, 1, 1], max_rows=3)
    >>> len(t), t.n_total, t.features["x"], t.labels
    (3, 4, [1.0, 2.0, 4.0], [0.0, 0.0, 1.0])
    """
    rows = sample_rows(labels, max_rows, seed)
    return TrustedSet(
        model=model,
        model_version=model_version,
        source=source,
        n_total=len(labels),
        features={name: [values[i] for i in rows] for name, values in columns.items()},
        labels=[labels[i] for i in rows],
    )


def trusted_from_records(
    records: Sequence[TrainingRecord], *, max_rows: int, seed: int = 0, source: str = ""
) -> TrustedSet:
    """A trusted set from training records of one model (e.g. a vetted replay)."""
    if not records:
        raise ValueError("a trusted set needs records")
    models = {r.model for r in records}
    if len(models) != 1:
        raise ValueError(f"records of one model only, got {sorted(models)}")
    return sample_trusted(
        records[0].model,
        columns_from_rows([r.features for r in records]),
        [r.label for r in records],
        max_rows=max_rows,
        seed=seed,
        source=source,
    )


def capped(trusted: TrustedSet, max_rows: int, seed: int = 0) -> TrustedSet:
    """The same trusted set, sampled down to ``max_rows`` when it holds more."""
    if len(trusted) <= max_rows:
        return trusted
    rows = sample_rows(trusted.labels, max_rows, seed)
    return trusted.model_copy(
        update={
            "features": {k: [v[i] for i in rows] for k, v in trusted.features.items()},
            "labels": [trusted.labels[i] for i in rows],
        }
    )
