"""The signals the poisoning guard judges a record on, gathered for a batch.

``record_signals`` is what each record shows on its own, from the fitted checks
(``streams.poisoning.checks``): its schema reasons, its label's p-value (strong
at most the strong level, weak up to ``label_weak_rate``) and the level of the
grid it falls under, its outlier score, its near-duplicate key. It keeps no state.

The rest depends on the record's window and source, and counts the batch in:
``judge_sources`` adds the records of each source to its sums
(``streams.poisoning.sources``), then judges the source (flags that fired now
or still hold from an earlier window, the label p-value level its weak labels
are held at, a sentence) and says which records are the first of a new
source's first window; ``count_duplicates`` counts the records' keys per source
(``streams.poisoning.duplicates``). Their state is the tracker's and the
counter's, bounded there. ``Context`` is what they add to one record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from schemas.poisoning import PoisoningPolicy
from streams.batch import Value
from streams.poisoning.checks import Checks
from streams.poisoning.duplicates import DuplicateCounter, near_duplicate_keys
from streams.poisoning.label_consistency import LabelScores
from streams.poisoning.schema_check import SchemaResult, check_schema
from streams.poisoning.sources import OTHER_SOURCES, SourceTracker
from streams.poisoning.state import WindowCounts

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True)
class RecordSignals:
    """What each record of a batch shows on its own."""

    schema: SchemaResult
    labels: LabelScores | None
    strong: npt.NDArray[np.bool_]
    weak: npt.NDArray[np.bool_]
    label_index: Ints  # the record's trusted class, -1 if none
    level_index: Ints  # first p-value level at or above its label's p
    outlier: Floats | None
    is_outlier: npt.NDArray[np.bool_]
    dup_keys: list[bytes] | None


def record_signals(
    checks: Checks,
    columns: Mapping[str, Sequence[Value]],
    keys: list[str],
    raw_labels: list[bool | float | str],
    z: Floats,
) -> RecordSignals:
    """What each record shows on its own (no window, no source); ``z``: its encoded rows."""
    p = checks.policy
    n = z.shape[0]
    schema = (
        check_schema(columns, keys, raw_labels, checks.support, margin=p.range_margin)
        if p.schema_check
        else SchemaResult([[] for _ in range(n)], np.zeros(n), [""] * n)
    )
    none = np.zeros(n, dtype=np.bool_)
    labels = checks.labels.score(z, keys) if checks.labels is not None else None
    strong, weak = none, none
    label_index = np.full(n, -1, dtype=np.int64)
    level_index = np.full(n, checks.levels.size, dtype=np.int64)
    if labels is not None and checks.labels is not None:
        with np.errstate(invalid="ignore"):
            strong = labels.pvalue <= checks.labels.strong_level(p.label_false_rate)
            weak = labels.pvalue <= p.label_weak_rate
        # records the schema check holds back do not count towards their source's labels
        valid = np.array([not r for r in schema.reasons], dtype=np.bool_)
        label_index = np.array([checks.labels.index.get(k, -1) for k in keys], dtype=np.int64)
        label_index[~valid] = -1
        judged = np.isfinite(labels.pvalue) & valid
        level_index[judged] = np.searchsorted(checks.levels, labels.pvalue[judged] - 1e-12)
    outlier = checks.outliers.score(z) if checks.outliers is not None else None
    is_outlier = (
        outlier > checks.outliers.threshold
        if outlier is not None and checks.outliers is not None
        else none
    )
    return RecordSignals(
        schema=schema,
        labels=labels,
        strong=strong,
        weak=weak,
        label_index=label_index,
        level_index=level_index,
        outlier=outlier,
        is_outlier=is_outlier,
        dup_keys=near_duplicate_keys(z, p.duplicate_resolution) if p.duplicate_check else None,
    )


@dataclass(frozen=True)
class Suspicion:
    """What a source's window says about it: flags that hold now (raised in this window or
    still holding from an earlier one), the label p-value level its weakly inconsistent
    records are held at (0: none), and a sentence."""

    flags: frozenset[str] = frozenset()
    level: float = 0.0
    detail: str = ""


#: A source with nothing against it (and every source when ``source_check`` is off).
UNSUSPECTED = Suspicion()


@dataclass(frozen=True)
class Context:
    """What a record's window and source add to its own signals."""

    source: str  # the name it is counted under (OTHER_SOURCES beyond max_sources)
    window: int  # its window's start (ms)
    copies: int = 0  # copies of its key from its source in its window
    flood: bool = False  # part of a duplicate flood
    burst: int = 0  # its place in a new source's first window (0: not a new source)
    suspicion: Suspicion = UNSUSPECTED


def judge_sources(
    policy: PoisoningPolicy,
    sources: SourceTracker,
    window: int,
    by_source: Mapping[str, list[int]],
    sig: RecordSignals,
    z: Floats,
    counts: WindowCounts,
) -> tuple[dict[int, int], dict[str, Suspicion]]:
    """Count each source's records of the batch (rows of ``sig`` and ``z``) into its sums in
    ``window``, then judge it; flags raised now are marked on the source and in ``counts``.
    Returns each new source's record's place in its first window, and each source's
    suspicion."""
    burst: dict[int, int] = {}
    for name, idx in by_source.items():
        before = sources.count(window, name)
        new = name != OTHER_SOURCES and sources.is_new(name)
        ix = np.asarray(idx, dtype=np.int64)
        sources.add(
            window, name, label_index=sig.label_index[ix], level_index=sig.level_index[ix], z=z[ix]
        )
        if new:
            burst.update((i, before + rank + 1) for rank, i in enumerate(idx))
    suspicion: dict[str, Suspicion] = {}
    for name in by_source:
        judged = sources.judge(window, name)
        if judged.flags:
            sources.mark_suspect(window, name, judged.flags, policy.window)
            counts.flags.setdefault(name, set()).update(judged.flags)
            counts.details[name] = "; ".join(judged.details)
        carried = sources.flags_from_before(window, name) - set(judged.flags)
        level = judged.level
        if not judged.level and "label_disagreement" in carried:
            level = sources.weak_level(window, name)
        said = list(judged.details)
        if carried:
            said.append(f"flagged earlier ({', '.join(sorted(carried))})")
        suspicion[name] = Suspicion(frozenset(judged.flags) | carried, level, "; ".join(said))
    return burst, suspicion


def count_duplicates(
    duplicates: DuplicateCounter, window: int, names: Mapping[int, str], keys: Sequence[bytes]
) -> tuple[dict[int, int], dict[int, bool]]:
    """Count the keys of records ``names`` (record -> its source's name, in order) into
    ``window``; each record's copies in its window after the batch, and whether it is
    part of a flood."""
    rows = list(names)
    got, floods = duplicates.add(window, list(names.values()), [keys[i] for i in rows])
    return (
        dict(zip(rows, got.tolist(), strict=True)),
        dict(zip(rows, floods.tolist(), strict=True)),
    )
