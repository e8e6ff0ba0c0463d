"""The poisoning guard as a whole (streams/poisoning/guard.py): window status (ok, suspect,
campaign), event-time windows and late records, determinism, bounded state, the verdict
as a QuarantinedRecord, the trusted set and the policy section."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from schemas.poisoning import PoisoningPolicy, TrustedSet
from schemas.reports import QuarantinedRecord
from streams.poisoning.guard import PoisoningGuard
from streams.poisoning.trusted import trusted_from_records
from tests.streams.poisoning.test_data import (
    HOUR_S,
    T0,
    draw,
    guard,
    profile,
    records,
    spread,
    trusted,
)


def test_a_clean_window_is_ok() -> None:
    g = guard()
    rows, labels = draw(50, 1000)
    g.screen(spread(rows, labels, 5))
    (report,) = g.flush()
    assert report.status == "ok"
    assert report.model == "fraud"
    assert report.window_start.timestamp() == T0
    assert report.window_end.timestamp() == T0 + HOUR_S
    assert report.reason.startswith("0 of 1000 records quarantined")


def test_one_source_flipping_a_third_of_its_labels_is_a_campaign() -> None:
    g = guard()
    rows, labels = draw(51, 1000)
    names = [f"s{i % 5}" for i in range(1000)]
    sent = [1.0 - labels[i] if names[i] == "s2" and i % 3 == 0 else labels[i]
            for i in range(1000)]
    g.screen(spread(rows, sent, 5))
    (report,) = g.flush()
    assert report.status == "campaign"
    held = report.sources["s2"].seen - report.sources["s2"].passed
    assert held >= 60
    assert "s2: " in report.reason and "campaign limit 15%" in report.reason
    others = sum(c.seen - c.passed for name, c in report.sources.items() if name != "s2")
    assert others <= 10


def test_flips_spread_over_every_source_make_the_window_a_campaign() -> None:
    g = guard()
    rows, labels = draw(52, 1000)
    sent = [1.0 - v if i % 8 == 0 else v for i, v in enumerate(labels)]  # 12.5 % of all
    g.screen(spread(rows, sent, 5))
    (report,) = g.flush()
    assert report.status == "campaign"
    assert "the window's quarantined share passes 10%" in report.reason


def test_a_few_quarantined_records_make_a_window_suspect_not_a_campaign() -> None:
    g = guard()
    rows, labels = draw(53, 1000)
    rows = [{**r, "x4": 1e6} if i % 14 == 3 else r for i, r in enumerate(rows)]  # 7 %
    g.screen(spread(rows, labels, 5))
    (report,) = g.flush()
    assert report.status == "suspect", report.reason
    assert "above the suspect share 5%" in report.reason
    assert sum(c.quarantined.get("out_of_range", 0) for c in report.sources.values()) == 72
    assert "flagged" not in report.reason  # records the schema holds back do not count twice


def test_windows_close_on_event_time_and_late_records_are_counted() -> None:
    g = guard(PoisoningPolicy.model_validate(
        {"window": "1h", "allowed_lateness": "5m", "max_open_windows": 4}))
    rows, labels = draw(54, 300)
    g.screen(records(rows[:100], labels[:100], start=T0, span=3000))
    assert g.reports() == []
    # an hour and four minutes later: the first window is still open (lateness 5 min)
    g.screen(records(rows[100:110], labels[100:110], start=T0 + HOUR_S + 240, span=10,
                     prefix="b"))
    assert g.reports() == []
    g.screen(records(rows[110:120], labels[110:120], start=T0 + HOUR_S + 301, span=10,
                     prefix="c"))
    (first,) = g.reports()
    assert first.window_start.timestamp() == T0
    assert sum(c.seen for c in first.sources.values()) == 100
    late = g.screen(records(rows[120:125], labels[120:125], start=T0 + 10, span=10,
                            prefix="late"))
    assert all(v.window_start_ms == int((T0 + HOUR_S) * 1000) for v in late)
    assert g.window_counts()[int((T0 + HOUR_S) * 1000)].late == 5
    (second,) = g.flush()
    assert sum(c.seen for c in second.sources.values()) == 25
    assert "5 late records" in second.reason


def test_too_many_open_windows_close_the_oldest_early() -> None:
    g = guard(PoisoningPolicy.model_validate(
        {"window": "1m", "allowed_lateness": "1h", "max_open_windows": 2}))
    rows, labels = draw(55, 5)
    for m in range(5):
        g.screen(records(rows[m:m + 1], labels[m:m + 1], start=T0 + 60 * m, span=1,
                         prefix=f"m{m}"))
    assert len(g.window_counts()) == 2
    assert [r.window_start.timestamp() for r in g.reports()] == [T0, T0 + 60, T0 + 120]


def test_the_same_records_give_the_same_verdicts_and_reports() -> None:
    rows, labels = draw(56, 1200)
    sent = [1.0 - v if i % 9 == 4 else v for i, v in enumerate(labels)]
    rows = rows + [rows[3]] * 8
    sent = sent + [sent[3]] * 8
    recs = spread(rows, sent, 4, span=2 * HOUR_S)

    def run() -> tuple[list[object], list[object]]:
        g = guard()
        verdicts: list[object] = []
        for start in range(0, len(recs), 100):
            verdicts += g.screen(recs[start:start + 100])
        return verdicts, [r.model_dump() for r in g.flush()]

    first, second = run(), run()
    assert first == second
    assert any(not v.passed for v in first[0])  # type: ignore[attr-defined]


def test_state_stays_within_the_policy_bounds() -> None:
    policy = PoisoningPolicy.model_validate(
        {"window": "10m", "max_open_windows": 3, "max_sources": 20,
         "duplicate_cache_size": 150, "source_history": 4})
    g = guard(policy)
    for w in range(12):
        rows, labels = draw(60 + w, 400)
        names = [f"src-{w}-{i % 40}" for i in range(400)]  # 40 fresh sources each window
        g.screen(records(rows, labels, source=names, start=T0 + 600 * w, span=590,
                         prefix=f"w{w}-"))
        size = g.state_size()
        assert size["open_windows"] <= 3
        assert size["window_sources"] <= 21
        assert size["source_window_sums"] <= 21
        assert size["duplicate_keys"] <= 150
        assert size["source_histories"] <= 20
        assert size["source_history_volumes"] <= 4
    assert size["trusted_rows"] == len(trusted())
    assert size["outlier_nodes"] == 10 * 511
    assert size["encoded_columns"] == 9
    reports = g.flush()
    assert all(len(r.sources) <= 21 for r in reports)


def test_a_quarantined_verdict_is_the_record_unchanged_with_reasons() -> None:
    g = guard()
    rows, labels = draw(57, 3)
    rec = records([{**rows[0], "x0": 1e9}], labels[:1])[0]
    (verdict,) = g.screen([rec])
    out = verdict.quarantined(rec)
    again = QuarantinedRecord.model_validate_json(out.model_dump_json())
    assert again.record == rec
    assert "out_of_range" in again.reasons
    assert again.scores["range_excess"] > 1


def test_the_trusted_set_survives_json_and_gives_the_same_guard() -> None:
    t = trusted()
    copy = TrustedSet.model_validate_json(t.model_dump_json())
    assert copy == t
    rows, labels = draw(58, 200)
    recs = spread(rows, [1.0 - v if i % 7 == 0 else v for i, v in enumerate(labels)], 3)
    a = PoisoningGuard(PoisoningPolicy(), t, profile()).screen(recs)
    b = PoisoningGuard(PoisoningPolicy(), copy, profile()).screen(recs)
    assert a == b


def test_a_large_trusted_set_is_sampled_down_keeping_every_class() -> None:
    g = PoisoningGuard(PoisoningPolicy(trusted_max_rows=100), trusted())
    assert g.trusted_rows == 100
    assert g.labels is not None and g.labels.classes == ("0", "1")


def test_trusted_sets_refuse_ragged_columns() -> None:
    with pytest.raises(ValidationError, match="need one value per label"):
        TrustedSet(model="m", n_total=3, features={"a": [1.0, 2.0]}, labels=[0.0, 1.0, 1.0])


def test_records_of_another_model_are_refused() -> None:
    g = guard()
    rows, labels = draw(59, 1)
    rec = records(rows, labels)[0].model_copy(update={"model": "churn"})
    with pytest.raises(ValueError, match="screens model 'fraud'"):
        g.screen([rec])


def test_the_policy_section_validates_and_round_trips() -> None:
    policy = PoisoningPolicy.model_validate({"window": "30m", "k": 7, "source_fdr": 0.1})
    assert policy.window == 1_800_000
    dumped = json.loads(policy.model_dump_json())
    assert dumped["window"] == "30m"
    assert PoisoningPolicy.model_validate(dumped) == policy
    with pytest.raises(ValidationError, match="extra"):
        PoisoningPolicy.model_validate({"windw": "5m"})
    with pytest.raises(ValidationError):
        PoisoningPolicy(k=0)
    with pytest.raises(ValidationError, match="suspect_share"):
        PoisoningPolicy(suspect_share=0.5, campaign_window_share=0.2)
    with pytest.raises(ValidationError, match="label_false_rate"):
        PoisoningPolicy(label_false_rate=0.1, label_weak_rate=0.05)
    with pytest.raises(ValidationError):
        policy.k = 3
    fields = PoisoningPolicy.model_fields
    assert all(f.description for f in fields.values())
    assert all(f.default is not None for f in fields.values())
    unbounded = [
        name for name, f in fields.items()
        if f.annotation is not bool
        and not any(type(m).__name__ in ("Le", "Lt") for m in f.metadata)
        and name not in ("window", "allowed_lateness")  # durations: any length
    ]
    assert unbounded == []


def test_a_trusted_set_from_records_keeps_their_values() -> None:
    rows, labels = draw(61, 50)
    t = trusted_from_records(records(rows, labels), max_rows=20, seed=3)
    assert len(t) == 20 and t.n_total == 50 and t.model == "fraud"
    assert set(t.features) == set(rows[0])
    assert sorted(set(t.labels)) == [0.0, 1.0]
