"""The poisoning guard's decision on one record (streams/poisoning/verdict.py), from
hand-made signals: decisive signals quarantine alone, weak ones only when their source
backs them, and a quarantined record lists every signal that fired."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from schemas.events import TrainingRecord
from schemas.poisoning import PoisoningPolicy
from streams.poisoning.checks import Checks
from streams.poisoning.label_consistency import LabelScores
from streams.poisoning.schema_check import SchemaResult
from streams.poisoning.signals import Context, RecordSignals, Suspicion
from streams.poisoning.verdict import decide
from tests.streams.poisoning.test_data import T0, draw, profile, records, trusted

STRONG_P = 0.001  # below the strong level (label_false_rate 0.005)
WEAK_P = 0.02  # between the strong level and label_weak_rate (0.05)


@functools.cache
def checks() -> Checks:
    return Checks.fit(PoisoningPolicy(), trusted(), profile())


@functools.cache
def record() -> TrainingRecord:
    rows, _ = draw(70, 1)
    return records(rows, [1.0], start=T0)[0]


def signals(*, p: float = 0.5, outlier: float = 0.0, schema: tuple[str, ...] = ()) -> RecordSignals:
    """One record's signals: its label p-value, outlier score and schema reasons."""
    c = checks()
    assert c.labels is not None and c.outliers is not None
    pvalue = np.array([p])
    score = np.array([outlier])
    return RecordSignals(
        schema=SchemaResult([list(schema)], np.zeros(1), ["x0 is odd" if schema else ""]),
        labels=LabelScores(np.array([1.5]), np.array([2.0]), pvalue, np.array([0])),
        strong=pvalue <= c.labels.strong_level(c.policy.label_false_rate),
        weak=pvalue <= c.policy.label_weak_rate,
        label_index=np.array([1]),
        level_index=np.array([0]),
        outlier=score,
        is_outlier=score > c.outliers.threshold,
        dup_keys=[b"k"],
    )


def context(
    flags: frozenset[str] = frozenset(), level: float = 0.0, **kwargs: int | bool
) -> Context:
    return Context("s0", 0, suspicion=Suspicion(flags, level, "it moved"), **kwargs)  # type: ignore[arg-type]


FAR = 1e9  # an outlier score above any threshold


@pytest.mark.parametrize(
    ("sig", "ctx", "reasons"),
    [
        ({}, {}, ()),
        ({"p": STRONG_P}, {}, ("label_inconsistent",)),
        ({"schema": ("out_of_range",)}, {}, ("out_of_range",)),
        ({}, {"flood": True, "copies": 5}, ("duplicate_flood",)),
        ({}, {"burst": 101}, ("new_source_burst",)),
        ({}, {"burst": 100}, ()),  # the first new_source_burst records pass
        # weak signals alone pass; a flagged source alone passes
        ({"p": WEAK_P}, {}, ()),
        ({"outlier": FAR}, {}, ()),
        ({}, {"flags": frozenset({"volume"})}, ()),
        # backed by their source: a weak label at or below its level, an outlier by a
        # source whose features or volume moved
        (
            {"p": WEAK_P},
            {"flags": frozenset({"label_disagreement"}), "level": 0.03},
            ("label_inconsistent", "source_anomaly"),
        ),
        ({"p": WEAK_P}, {"flags": frozenset({"label_disagreement"}), "level": 0.01}, ()),
        ({"outlier": FAR}, {"flags": frozenset({"features"})}, ("outlier", "source_anomaly")),
        ({"outlier": FAR}, {"flags": frozenset({"label_disagreement"})}, ()),
        # decisive: whatever else fired is listed too
        (
            {"p": STRONG_P, "outlier": FAR},
            {"flags": frozenset({"volume"})},
            ("label_inconsistent", "outlier", "source_anomaly"),
        ),
        (
            {"p": WEAK_P, "schema": ("missing",)},
            {"flood": True, "copies": 4},
            ("missing", "duplicate_flood", "label_inconsistent"),
        ),
    ],
)
def test_decisive_signals_quarantine_alone_and_weak_ones_with_their_source(
    sig: dict[str, object], ctx: dict[str, object], reasons: tuple[str, ...]
) -> None:
    verdict = decide(checks(), record(), signals(**sig), 0, context(**ctx))  # type: ignore[arg-type]
    assert verdict.reasons == reasons
    assert verdict.passed == (not reasons)
    assert verdict.explanation.startswith("passed" if not reasons else "quarantined: ")


def test_a_verdict_carries_its_scores_and_says_why() -> None:
    c = checks()
    assert c.outliers is not None
    verdict = decide(
        c,
        record(),
        signals(p=WEAK_P, outlier=FAR),
        0,
        context(frozenset({"features"}), copies=2),
    )
    assert verdict.record_id == record().record_id and verdict.window_start_ms == 0
    assert verdict.scores == {
        "label_p": WEAK_P,
        "label_ratio": 1.5,
        "label_nll": 2.0,
        "outlier": FAR,
        "outlier_threshold": c.outliers.threshold,
        "copies": 2.0,
        "source_flags": 1.0,
    }
    # the outlier is backed; the weak label is not, but is listed with it
    assert verdict.reasons == ("label_inconsistent", "outlier", "source_anomaly")
    assert "label 1.0 is inconsistent with the trusted data, which prefers '0'" in (
        verdict.explanation
    )
    assert "(weak evidence)" in verdict.explanation
    assert verdict.explanation.endswith("source s0 is suspect: it moved")
    passed = decide(c, record(), signals(p=WEAK_P), 0, context())
    assert passed.explanation.startswith("passed; not enough alone: label 1.0 is inconsistent")
