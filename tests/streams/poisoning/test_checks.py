"""The poisoning guard's record checks: schema, label consistency, duplicates, outliers.

Each check has a test that makes it fire and one that keeps it quiet on clean
data (streams/poisoning/). The per-source checks and the window status are in
test_sources.py and test_guard.py.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from schemas.poisoning import PoisoningPolicy
from streams.poisoning.duplicates import DuplicateCounter, near_duplicate_keys
from streams.poisoning.outliers import OutlierScorer
from streams.poisoning.schema_check import NumericSupport, Support, check_schema
from tests.streams.poisoning.test_data import (
    NUMERIC,
    Row,
    draw,
    flip,
    guard,
    records,
    spread,
    strength,
    trusted,
    weakly_inconsistent,
)

# -- schema, type and range -------------------------------------------------------------


def _bad_rows() -> list[tuple[str, Row, object]]:
    rows, _ = draw(11, 12)
    cases: list[tuple[str, Row, object]] = [
        ("non_finite", {**rows[0], "x0": math.nan}, 0.0),
        ("non_finite", {**rows[1], "x1": math.inf}, 0.0),
        ("wrong_type", {**rows[2], "x2": "12.5kg"}, 0.0),
        ("wrong_type", {**rows[3], "x3": True}, 0.0),
        ("out_of_range", {**rows[4], "x4": 1e6}, 0.0),
        ("unknown_category", {**rows[5], "channel": "fax"}, 0.0),
        ("wrong_type", {**rows[6], "channel": 3.0}, 0.0),
        ("missing_value", {k: v for k, v in rows[7].items() if k != "x5"}, 0.0),
        ("unknown_label", rows[8], "maybe"),
        ("non_finite", rows[9], math.nan),
    ]
    return cases


@pytest.mark.parametrize("with_profile", [True, False])
def test_schema_violations_are_quarantined_with_their_reason(with_profile: bool) -> None:
    g = guard(with_profile=with_profile)
    cases = _bad_rows()
    recs = records([row for _, row, _ in cases], [label for _, _, label in cases])  # type: ignore[misc]
    verdicts = g.screen(recs)
    for (reason, _, _), verdict in zip(cases, verdicts, strict=True):
        assert not verdict.passed
        assert reason in verdict.reasons, (reason, verdict.reasons, verdict.explanation)
        assert verdict.explanation.startswith("quarantined: ")
    far = verdicts[4]
    assert "x4=1e+06 is outside the reference range" in far.explanation
    assert far.scores["range_excess"] > 100


def test_schema_check_is_quiet_on_clean_records() -> None:
    g = guard()
    rows, labels = draw(12, 2000)
    verdicts = g.screen(spread(rows, labels, 5))
    schema = {"non_finite", "wrong_type", "out_of_range", "unknown_category", "missing_value",
              "unknown_label"}
    assert [v.reasons for v in verdicts if schema & set(v.reasons)] == []


def test_schema_check_can_be_switched_off() -> None:
    g = guard(PoisoningPolicy(schema_check=False))
    rows, labels = draw(13, 1)
    verdict = g.screen(records([{**rows[0], "x4": 1e6, "channel": "fax"}], labels))[0]
    assert "out_of_range" not in verdict.reasons
    assert "unknown_category" not in verdict.reasons


def test_range_is_judged_in_widths_of_the_reference_range_and_keeps_its_sign() -> None:
    support = Support({"amount": NumericSupport(0.0, 100.0, 20.0, True)}, {}, None)
    values: list[float | None] = [50.0, 399.0, 401.0, -0.01, 0.0]
    result = check_schema({"amount": values}, ["a"] * 5, ["a"] * 5, support, margin=3.0)
    assert result.reasons == [[], [], ["out_of_range"], ["out_of_range"], []]
    assert result.range_excess[2] == pytest.approx(3.01)


# -- label consistency -------------------------------------------------------------------


def test_flipped_labels_are_quarantined_even_a_few_per_source() -> None:
    g = guard()
    rows, labels = draw(14, 500)
    sure = [i for i, r in enumerate(rows)
            if labels[i] == 1.0 and strength(r) > 3 * 3.0][:5]
    sent = list(labels)
    for i in sure:
        sent[i] = 0.0
    verdicts = g.screen(spread(rows, sent, 5))
    for i in sure:
        assert not verdicts[i].passed
        assert "label_inconsistent" in verdicts[i].reasons
        assert verdicts[i].scores["label_p"] <= 0.005
        assert "which prefers '1'" in verdicts[i].explanation
    assert sum(not v.passed for v in verdicts) <= len(sure) + 5


def test_label_check_is_quiet_on_clean_records_at_its_calibrated_rate() -> None:
    g = guard()
    rows, labels = draw(15, 4000)
    verdicts = g.screen(spread(rows, labels, 8))
    strong = sum("label_inconsistent" in v.reasons for v in verdicts)
    assert strong <= 0.01 * len(verdicts)  # policy: label_false_rate 0.005
    p = np.array([v.scores["label_p"] for v in verdicts])
    # clean records' p-values are close to uniform: about 5 % at or below 0.05
    assert 0.02 <= float(np.mean(p <= 0.05)) <= 0.08
    assert 0.4 <= float(np.mean(p <= 0.5)) <= 0.6


def test_weakly_inconsistent_labels_from_one_source_are_quarantined() -> None:
    odd_rows, odd_labels = weakly_inconsistent(30)
    rows, labels = draw(17, 400)
    g = guard()
    clean = spread(rows, labels, 4)
    odd = records(odd_rows, odd_labels, source="s4", prefix="odd")
    verdicts = g.screen(clean + odd)
    caught = [v for v in verdicts[len(clean):] if not v.passed]
    assert len(caught) >= 25
    assert all(set(v.reasons) >= {"label_inconsistent", "source_anomaly"} for v in caught)
    assert "s4 is suspect" in caught[0].explanation
    assert all(v.passed for v in verdicts[: len(clean)] if "label_p" in v.scores
               and v.scores["label_p"] > 0.05)


def test_the_same_labels_spread_thin_over_honest_sources_pass() -> None:
    odd_rows, odd_labels = weakly_inconsistent(10)
    rows, labels = draw(17, 2000)
    g = guard()
    clean = spread(rows, labels, 5)
    odd = spread(odd_rows, odd_labels, 5, prefix="odd")
    verdicts = g.screen(clean + odd)
    assert sum(not v.passed for v in verdicts[len(clean):]) <= 2


def test_label_check_without_the_linear_model_still_catches_flips() -> None:
    g = guard(PoisoningPolicy(label_linear=False))
    rows, labels = draw(18, 300)
    sent = flip(labels[:10]) + labels[10:]
    verdicts = g.screen(spread(rows, sent, 3))
    assert "label_nll" not in verdicts[0].scores
    caught = sum(not v.passed for v in verdicts[:10])
    assert caught >= 8
    assert sum(not v.passed for v in verdicts[10:]) <= 6


def test_continuous_labels_turn_the_label_check_off_with_a_note() -> None:
    base = trusted()
    rng = np.random.default_rng(0)
    regression = base.model_copy(update={"labels": rng.normal(size=len(base)).tolist()})
    from streams.poisoning.guard import PoisoningGuard

    g = PoisoningGuard(PoisoningPolicy(), regression)
    assert g.labels is None
    assert "labels are not judged" in g.notes[0]
    rows, _ = draw(19, 5)
    verdicts = g.screen(records(rows, [123.0] * 5))
    assert all(v.passed and "label_p" not in v.scores for v in verdicts)


# -- duplicates ---------------------------------------------------------------------------


def test_a_flood_of_copies_from_one_source_is_quarantined() -> None:
    g = guard()
    rows, labels = draw(20, 200)
    copies = records([rows[0]] * 30, [labels[0]] * 30, source="s1", prefix="copy")
    verdicts = g.screen(spread(rows, labels, 2) + copies)
    flood = verdicts[200:]
    assert all(not v.passed and "duplicate_flood" in v.reasons for v in flood)
    assert flood[0].scores["copies"] == 30
    assert "30 copies from s1 in this window (more than 3)" in flood[0].explanation
    # the original, sent by s0, is not part of s1's flood
    assert verdicts[0].passed


def test_a_flood_across_batches_is_caught_from_its_fourth_copy() -> None:
    g = guard()
    rows, labels = draw(21, 300)
    honest = spread(rows, labels, 3)
    copies = records([rows[5]] * 20, [labels[5]] * 20, source="s2", prefix="copy",
                     start=honest[0].ts.timestamp() + 1)
    passed_copies = []
    for b in range(10):  # each batch: 30 honest records and 2 copies
        verdicts = g.screen(honest[30 * b: 30 * (b + 1)] + copies[2 * b: 2 * (b + 1)])
        passed_copies += [v.passed for v in verdicts[30:]]
    assert passed_copies[:2] == [True, True]
    assert not any(passed_copies[3:])


def test_jittered_near_duplicates_flood_too() -> None:
    g = guard()
    rows, labels = draw(22, 100)
    rng = np.random.default_rng(3)
    jittered = [{**rows[0], **{f: float(rows[0][f]) + rng.normal(0, 1e-4) for f in NUMERIC}}  # type: ignore[arg-type]
                for _ in range(12)]
    verdicts = g.screen(records(rows, labels) + records(jittered, [labels[0]] * 12,
                                                       prefix="jit"))
    assert sum("duplicate_flood" in v.reasons for v in verdicts[100:]) >= 10


def test_honest_occasional_duplicates_pass() -> None:
    g = guard()
    rows, labels = draw(23, 300)
    twice = records([rows[0], rows[0]], [labels[0]] * 2, source="s0", prefix="twice")
    thrice_apart = records([rows[1]] * 3, [labels[1]] * 3, source=["s0", "s1", "s2"],
                           prefix="apart")
    verdicts = g.screen(spread(rows, labels, 3) + twice + thrice_apart)
    assert not any("duplicate_flood" in v.reasons for v in verdicts)
    assert verdicts[-1].scores["copies"] == 1  # counted per source


def test_a_flooding_source_loses_its_other_repeats_too() -> None:
    g = guard()
    rows, labels = draw(24, 60)
    flood = records([rows[0]] * 5, [labels[0]] * 5, source="s1", prefix="f")
    pair = records([rows[1]] * 2, [labels[1]] * 2, source="s1", prefix="p")
    verdicts = g.screen(records(rows, labels) + flood + pair)
    assert [("duplicate_flood" in v.reasons) for v in verdicts[-2:]] == [True, True]
    assert "which floods copies in this window" in verdicts[-1].explanation


def test_duplicate_counts_are_bounded_per_window_and_keep_the_flood() -> None:
    counter = DuplicateCounter(cache_size=100, max_copies=3)
    keys = near_duplicate_keys(np.arange(3000, dtype=np.float64).reshape(1000, 3), 0.5)
    for start in range(0, 1000, 10):
        counter.add(0, ["s"] * 11, [*keys[start:start + 10], b"flood-key"])
    assert counter.keys(0) == 100
    copies, flood = counter.add(0, ["s"], [b"flood-key"])
    assert copies.tolist() == [101] and flood.tolist() == [True]
    counter.close(0)
    assert counter.keys(0) == 0


# -- feature outliers ---------------------------------------------------------------------

#: Every numeric feature near the edge of the trusted range, a label its position allows.
ODD = {"x0": -4.0, "x1": -4.0, "x2": -4.0, "x3": 4.0, "x4": -4.0, "x5": 4.0}


def test_outlier_scores_match_rivers_half_space_trees_exactly() -> None:
    rng = np.random.default_rng(4)
    scorer = OutlierScorer(rng.normal(size=(600, 9)), n_trees=10, height=8, rate=0.01, seed=0)
    z = np.vstack([rng.normal(size=(200, 9)), rng.normal(4, 3, size=(50, 9))])
    assert np.array_equal(scorer.score(z), scorer.score_river(z))
    assert scorer.nodes == 10 * 511


def test_an_outlier_alone_is_never_quarantined() -> None:
    g = guard()
    rows, labels = draw(25, 200)
    odd = [{**rows[i], **ODD} for i in range(5)]
    verdicts = g.screen(spread(rows, labels, 4) + records(odd, [0.0] * 5, prefix="odd"))
    outliers = [v for v in verdicts[200:] if v.scores["outlier"] > v.scores["outlier_threshold"]]
    assert len(outliers) == 5
    assert all(v.passed for v in outliers)
    assert all("not enough alone: unusual features" in v.explanation for v in outliers)


def test_outliers_from_a_source_whose_features_moved_are_quarantined() -> None:
    g = guard()
    rows, labels = draw(26, 400)
    moved, moved_labels = draw(27, 60)
    moved = [{**r, "x3": float(r["x3"]) + 2.0} for r in moved]  # type: ignore[arg-type]
    moved += [{**moved[i], **ODD} for i in range(5)]
    moved_labels = moved_labels + [0.0] * 5
    verdicts = g.screen(spread(rows, labels, 4) + records(moved, moved_labels, source="s9",
                                                       prefix="m"))
    reasons = Counter(v.reasons for v in verdicts[400:] if not v.passed)
    assert reasons[("outlier", "source_anomaly")] >= 3
    assert sum(v.passed for v in verdicts[400:]) >= 50  # its ordinary records pass
    assert all(v.passed for v in verdicts[:400] if "outlier" in v.reasons)
