"""Per-source behaviour in the poisoning guard (streams/poisoning/sources.py): label
disagreement, label mix, feature means, volume and new sources' bursts, each made to fire
and kept quiet; suspicion carried into the next window; bounded source state."""

from __future__ import annotations

from schemas.poisoning import PoisoningPolicy
from schemas.reports import PoisoningReport
from streams.poisoning.guard import PoisoningGuard
from streams.poisoning.sources import OTHER_SOURCES
from tests.streams.poisoning.test_data import (
    HOUR_S,
    T0,
    draw,
    guard,
    records,
    spread,
    weakly_inconsistent,
)


def _hours(g: PoisoningGuard, hours: int, per_hour: int, sources: int, seed: int = 30
           ) -> list[PoisoningReport]:
    """Clean traffic from ``sources`` sources, ``per_hour`` records an hour; reports of the
    hours that closed."""
    out = []
    for h in range(hours):
        rows, labels = draw(seed + h, per_hour)
        g.screen(spread(rows, labels, sources, start=T0 + h * HOUR_S, span=HOUR_S * 0.9,
                        prefix=f"h{h}-"))
        out += g.reports()
    return out


def test_clean_sources_raise_no_flag_over_many_windows() -> None:
    g = guard()
    reports = _hours(g, 6, 600, 5) + g.flush()
    assert len(reports) == 6
    assert [r.status for r in reports] == ["ok"] * 6
    assert not any("flagged" in r.reason for r in reports)
    assert all(sum(c.seen for c in r.sources.values()) == 600 for r in reports)


def test_label_disagreement_flags_the_source_that_flips() -> None:
    g = guard()
    rows, labels = draw(31, 600)
    names = [f"s{i % 6}" for i in range(600)]
    sent = [1.0 - labels[i] if names[i] == "s5" else labels[i] for i in range(600)]
    g.screen(records(rows, sent, source=names))
    counts = g.window_counts()[int(T0 * 1000)]
    assert set(counts.flags) == {"s5"}
    assert "label_disagreement" in counts.flags["s5"]
    assert "labels are inconsistent with the trusted data" in counts.details["s5"]
    report = g.flush()[0]
    assert report.sources["s5"].quarantined["label_inconsistent"] >= 95
    assert report.sources["s0"].passed >= 98


def test_label_mix_flags_a_source_that_sends_one_class_only() -> None:
    g = guard()
    _hours(g, 1, 500, 5)
    rows, labels = draw(32, 1500)
    positives = [i for i, v in enumerate(labels) if v == 1.0][:120]
    clean = spread(rows[:500], labels[:500], 4, start=T0 + HOUR_S)
    only_pos = records([rows[i] for i in positives], [1.0] * len(positives), source="s4",
                       start=T0 + HOUR_S, prefix="pos")
    g.screen(clean + only_pos)
    flags = g.window_counts()[int((T0 + HOUR_S) * 1000)].flags
    assert "label_mix" in flags["s4"]
    assert "features" in flags["s4"]  # positives sit elsewhere too
    assert set(flags) == {"s4"}


def test_feature_shift_of_one_source_is_flagged_but_its_records_pass() -> None:
    g = guard()
    _hours(g, 1, 500, 5)
    rows, labels = draw(33, 500)
    shifted = [{**r, "x4": float(r["x4"]) + 1.5} if i % 5 == 3 else r  # type: ignore[arg-type]
               for i, r in enumerate(rows)]
    verdicts = g.screen(spread(shifted, labels, 5, start=T0 + HOUR_S))
    counts = g.window_counts()[int((T0 + HOUR_S) * 1000)]
    assert set(counts.flags) == {"s3"}
    assert counts.flags["s3"] == {"features"}
    assert "x4 by +1." in counts.details["s3"]
    assert sum(not v.passed for v in verdicts) <= 5  # a flag alone holds nothing back
    report = g.flush()[-1]
    assert report.status == "suspect"


def test_volume_spike_of_one_source_is_flagged() -> None:
    g = guard()
    _hours(g, 2, 500, 5)
    rows, labels = draw(34, 1400)
    names = ["s0", "s1", "s2", "s3"] * 100 + ["s4"] * 1000
    g.screen(records(rows, labels, source=names, start=T0 + 2 * HOUR_S))
    flags = g.window_counts()[int((T0 + 2 * HOUR_S) * 1000)].flags
    assert set(flags) == {"s4"} and "volume" in flags["s4"]


def test_all_sources_growing_together_is_not_a_volume_spike() -> None:
    g = guard()
    _hours(g, 2, 500, 5)
    rows, labels = draw(35, 5000)
    g.screen(spread(rows, labels, 5, start=T0 + 2 * HOUR_S))
    assert g.window_counts()[int((T0 + 2 * HOUR_S) * 1000)].flags == {}


def test_a_new_source_bursting_in_is_capped() -> None:
    policy = PoisoningPolicy(new_source_burst=50)
    g = guard(policy)
    _hours(g, 1, 500, 5)
    rows, labels = draw(36, 400)
    # the first batch of the hour closes the last one (its sources now have history)
    g.screen(spread(rows[:200], labels[:200], 5, start=T0 + HOUR_S))
    from_new = g.screen(records(rows[200:], labels[200:], source="newcomer",
                                start=T0 + HOUR_S + 1, prefix="new"))
    assert not any("new_source_burst" in v.reasons for v in from_new[:50])
    assert all(not v.passed and "new_source_burst" in v.reasons for v in from_new[50:])
    assert "the first 50 pass" in from_new[60].explanation
    report = g.flush()[-1]
    assert report.sources["newcomer"].quarantined["new_source_burst"] == 150
    assert "new_source_burst" in report.reason


def test_new_sources_within_their_allowance_and_first_windows_pass() -> None:
    policy = PoisoningPolicy(new_source_burst=50)
    g = guard(policy)
    rows, labels = draw(37, 400)
    # the very first window: nobody has history, so nobody is new
    first = g.screen(records(rows, labels, source="early-bird"))
    assert all("new_source_burst" not in v.reasons for v in first)
    g.screen(records(rows[:10], labels[:10], start=T0 + HOUR_S, source="s0", prefix="x"))
    g.reports()
    later = g.screen(records(rows[:40], labels[:40], source="small-newcomer",
                             start=T0 + HOUR_S + 10, prefix="y"))
    assert all("new_source_burst" not in v.reasons for v in later)


def test_suspicion_carries_into_the_next_window() -> None:
    g = guard(PoisoningPolicy(suspicion_windows=1))
    rows, labels = draw(38, 500)
    names = [f"s{i % 5}" for i in range(500)]
    sent = [1.0 - labels[i] if names[i] == "s4" and i % 2 == 0 else labels[i]
            for i in range(500)]
    g.screen(records(rows, sent, source=names))
    # next hour: s4 and the clean s3 send the same weakly inconsistent labels, one each
    # (too few to flag a source on their own: source_min_flagged is 3)
    odd_rows, odd_labels = weakly_inconsistent(2)
    from_s4 = g.screen(records(odd_rows, odd_labels, source="s4", start=T0 + HOUR_S,
                               prefix="s4-"))
    from_s3 = g.screen(records(odd_rows, odd_labels, source="s3", start=T0 + HOUR_S + 1,
                               prefix="s3-"))
    assert len(from_s4) == len(from_s3) == 2
    assert all(not v.passed and "source_anomaly" in v.reasons for v in from_s4)
    assert all("flagged earlier (label_disagreement" in v.explanation for v in from_s4)
    assert all(v.passed for v in from_s3)


def test_sources_beyond_the_limit_share_one_bucket_and_histories_are_bounded() -> None:
    policy = PoisoningPolicy(max_sources=3)
    g = guard(policy)
    for h in range(3):
        rows, labels = draw(40 + h, 200)
        g.screen(spread(rows, labels, 10, start=T0 + h * HOUR_S, prefix=f"h{h}"))
    report = g.flush()[-1]
    assert set(report.sources) == {"s0", "s1", "s2", OTHER_SOURCES}
    assert report.sources[OTHER_SOURCES].seen == 140
    assert len(g.sources.histories) <= 3
