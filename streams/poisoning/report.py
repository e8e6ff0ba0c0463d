"""The poisoning guard's reports: a closed window's :class:`~schemas.reports.PoisoningReport`,
and the report of held records quarantined without screening.

``window_report`` turns a window's counts (``streams.poisoning.state``) into its
status: ``campaign`` when at least ``campaign_min_records`` records and
``campaign_window_share`` of the window were quarantined, or as many and
``campaign_source_share`` of one source's; else ``suspect`` when a source was
flagged or ``suspect_share`` of the window was quarantined; else ``ok``. Its
``reason`` says which, with the flagged sources, late and released records.
Both are pure functions; they keep no state.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

from schemas.events import TrainingRecord
from schemas.poisoning import PoisoningPolicy
from schemas.reports import PoisoningReport, SourceCounts
from streams.poisoning.state import WindowCounts

#: The reason of a record quarantined because its model had no trusted set to screen it.
NO_TRUSTED_SET = "no_trusted_set"


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def window_report(
    policy: PoisoningPolicy, model: str, start: int, counts: WindowCounts
) -> PoisoningReport:
    """The report of ``model``'s window starting at ``start`` (ms), from its counts."""
    p = policy
    sources = {
        name: SourceCounts(
            seen=c.seen,
            passed=c.passed,
            quarantined={r: c.reasons[r] for r in sorted(c.reasons)},
        )
        for name, c in sorted(counts.sources.items())
    }
    seen = sum(c.seen for c in counts.sources.values())
    held = seen - sum(c.passed for c in counts.sources.values())
    share = held / seen if seen else 0.0
    campaign_sources = [
        (name, c.seen - c.passed, (c.seen - c.passed) / c.seen)
        for name, c in sorted(counts.sources.items())
        if c.seen
        and c.seen - c.passed >= p.campaign_min_records
        and (c.seen - c.passed) / c.seen >= p.campaign_source_share
    ]
    flagged = sorted(counts.flags)
    said = [f"{held} of {seen} records quarantined ({share:.1%})"]
    status: Literal["ok", "suspect", "campaign"]
    if held >= p.campaign_min_records and share >= p.campaign_window_share:
        status = "campaign"
        said.append(f"the window's quarantined share passes {p.campaign_window_share:.0%}")
    elif campaign_sources:
        status = "campaign"
    elif flagged or share >= p.suspect_share:
        status = "suspect"
    else:
        status = "ok"
    for name, n, s in campaign_sources:
        said.append(
            f"{name}: {n} quarantined, {s:.0%} of its records (campaign limit "
            f"{p.campaign_source_share:.0%})"
        )
    if status == "suspect" and share >= p.suspect_share:
        said.append(f"above the suspect share {p.suspect_share:.0%}")
    for name in flagged:
        why = counts.details.get(name, "")
        said.append(
            f"source {name} flagged: {', '.join(sorted(counts.flags[name]))}"
            + (f" ({why})" if why else "")
        )
    if counts.late:
        said.append(f"{counts.late} late records (their own window had closed) counted here")
    if counts.released:
        said.append(f"{counts.released} records waited for the trusted set, then were screened")
    return PoisoningReport(
        model=model,
        window_start=_at(start),
        window_end=_at(start + p.window),
        sources=sources,
        status=status,
        reason="; ".join(said),
        held=counts.released,
        released=counts.released,
    )


def unscreened_report(
    policy: PoisoningPolicy, model: str, records: Sequence[TrainingRecord], why: str
) -> PoisoningReport:
    """The report of held records quarantined without screening (``no_trusted_set``):
    counted per source, over the windows their ``ts`` spans; status ``suspect``.

    >>> from schemas.events import TrainingRecord
    >>> r = TrainingRecord(record_id="1", model="m", ts=120.5, source="crm",
    ...                    features={"x": 1.0}, label=True)
    >>> report = unscreened_report(PoisoningPolicy(window="60s"), "m", [r], "no trusted set")
    >>> report.window_start.isoformat(), report.unscreened, report.sources["crm"].quarantined
    ('1970-01-01T00:02:00+00:00', 1, {'no_trusted_set': 1})
    """
    if not records:
        raise ValueError("an unscreened report needs records")
    ts = [r.ts_ms() for r in records]
    start = min(ts) - min(ts) % policy.window
    end = max(ts) - max(ts) % policy.window + policy.window
    by_source = Counter(r.source for r in records)
    n = len(records)
    return PoisoningReport(
        model=model,
        window_start=_at(start),
        window_end=_at(end),
        sources={
            name: SourceCounts(seen=k, passed=0, quarantined={NO_TRUSTED_SET: k})
            for name, k in sorted(by_source.items())
        },
        status="suspect",
        reason=f"{n} records quarantined unscreened ({NO_TRUSTED_SET}): {why}",
        held=n,
        unscreened=n,
    )
