"""The poisoning guard's reports (streams/poisoning/report.py): a closed window's status
from its counts (ok, suspect, campaign) and the sentence saying why; the report of records
quarantined unscreened."""

from __future__ import annotations

from collections import Counter

import pytest

from schemas.poisoning import PoisoningPolicy
from streams.poisoning.report import NO_TRUSTED_SET, unscreened_report, window_report
from streams.poisoning.state import Counts, WindowCounts
from tests.streams.poisoning.test_data import T0, draw, records

POLICY = PoisoningPolicy(window="10m")  # suspect 5 %, campaign 10 % of the window or
# 15 % of a source, each with at least 10 records
START = int(T0 * 1000)


def counts(**held: tuple[int, int]) -> WindowCounts:
    """Per source (seen, quarantined), each quarantined record for label_inconsistent."""
    return WindowCounts(
        sources={
            name: Counts(seen, seen - bad, Counter({"label_inconsistent": bad} if bad else {}))
            for name, (seen, bad) in held.items()
        }
    )


@pytest.mark.parametrize(
    ("window", "status", "said"),
    [
        (WindowCounts(), "ok", "0 of 0 records quarantined (0.0%)"),
        (counts(a=(100, 0), b=(100, 4)), "ok", "4 of 200 records quarantined (2.0%)"),
        (counts(a=(100, 0), b=(100, 10)), "suspect", "above the suspect share 5%"),
        # at least 10 quarantined and 10 % of the window
        (counts(a=(50, 5), b=(50, 5)), "campaign", "the window's quarantined share passes 10%"),
        (counts(a=(40, 5), b=(40, 4)), "suspect", "9 of 80 records quarantined (11.2%)"),
        # or of one source, 15 % of its records
        (
            counts(a=(200, 0), b=(60, 10)),
            "campaign",
            "b: 10 quarantined, 17% of its records (campaign limit 15%)",
        ),
        (counts(a=(200, 0), b=(70, 10)), "ok", "10 of 270 records quarantined (3.7%)"),
    ],
)
def test_a_window_is_ok_suspect_or_a_campaign_by_what_was_quarantined(
    window: WindowCounts, status: str, said: str
) -> None:
    report = window_report(POLICY, "fraud", START, window)
    assert report.status == status
    assert said in report.reason


def test_a_flagged_source_makes_a_window_suspect_and_the_report_says_it_all() -> None:
    window = counts(a=(100, 0), b=(100, 1))
    window.flags = {"b": {"volume", "features"}}
    window.details = {"b": "400 records this window"}
    window.late, window.released = 3, 7
    report = window_report(POLICY, "fraud", START, window)
    assert report.status == "suspect"
    assert report.reason == (
        "1 of 200 records quarantined (0.5%); source b flagged: features, volume (400 records "
        "this window); 3 late records (their own window had closed) counted here; 7 records "
        "waited for the trusted set, then were screened"
    )
    assert report.model == "fraud"
    assert report.window_start.timestamp() == T0
    assert report.window_end.timestamp() == T0 + 600
    assert report.held == report.released == 7
    assert report.sources["b"].quarantined == {"label_inconsistent": 1}
    assert list(report.sources) == ["a", "b"]


def test_records_quarantined_unscreened_are_reported_over_the_windows_they_span() -> None:
    rows, labels = draw(71, 3)
    recs = records(rows, labels, source=["crm", "web", "crm"], start=T0 + 30, span=1800)
    report = unscreened_report(POLICY, "fraud", recs, "held too long")
    assert report.status == "suspect"
    assert report.window_start.timestamp() == T0
    assert report.window_end.timestamp() == T0 + 1800  # the last record is in the third
    assert report.held == report.unscreened == 3
    assert report.sources["crm"].quarantined == {NO_TRUSTED_SET: 2}
    assert report.reason == "3 records quarantined unscreened (no_trusted_set): held too long"
    with pytest.raises(ValueError, match="needs records"):
        unscreened_report(POLICY, "fraud", [], "nothing")
