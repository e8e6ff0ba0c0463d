"""The poisoning guard's state (streams/poisoning/state.py): a ``GuardState`` stored by
driftline before the guard was split into modules (``guard_state_v1``, captured
from commit 1f4a975) still restores, goes on as that guard went on, and is exactly what
the guard writes today for the same records; a window's counts as plain data and back."""

from __future__ import annotations

from collections import Counter

import pytest

from agents.runtime import state_codec
from schemas.events import TrainingRecord
from schemas.poisoning import PoisoningPolicy
from streams.poisoning.guard import PoisoningGuard
from streams.poisoning.sources import OTHER_SOURCES
from streams.poisoning.state import Counts, GuardState, LiveState, WindowCounts
from tests.streams.poisoning import guard_state_v1 as v1
from tests.streams.poisoning.test_data import T0, draw, flip, profile, records, trusted

#: The policy the stored state was kept under.
POLICY = PoisoningPolicy.model_validate(
    {
        "window": "1m",
        "allowed_lateness": "0s",
        "max_open_windows": 3,
        "new_source_burst": 3,
        "source_history": 4,
        "duplicate_cache_size": 100,
    }
)

Batches = list[tuple[list[TrainingRecord], bool]]  # records, held


def before() -> Batches:
    """What the stored guard had screened: a first minute from s0, s1 and s2 (s2 flips
    every label: flagged), then in the second minute a duplicate flood from ``bot``, a
    burst from the new source ``newbie``, a late record of the first minute and two held
    records; the first minute's report not taken."""
    rows, labels = draw(21, 36)
    names = [f"s{i % 3}" for i in range(36)]
    sent = [1.0 - v if names[i] == "s2" else v for i, v in enumerate(labels)]
    a = records(rows, sent, source=names, start=T0, span=50, prefix="a")
    rows, labels = draw(22, 9)
    b = records(
        rows, labels, source=[f"s{i % 3}" for i in range(9)], start=T0 + 60, span=20, prefix="b"
    )
    copy_row, copy_label = draw(23, 1)
    bot = records(copy_row * 5, copy_label * 5, source="bot", start=T0 + 70, span=10, prefix="bot")
    new_rows, new_labels = draw(24, 5)
    new = records(new_rows, new_labels, source="newbie", start=T0 + 75, span=10, prefix="new")
    late_row, late_label = draw(25, 1)
    late = records(late_row, late_label, source="s1", start=T0 + 40, span=1, prefix="late")
    held_rows, held_labels = draw(26, 2)
    held = records(held_rows, held_labels, source="s0", start=T0 + 90, span=5, prefix="held")
    return [
        (a[:20], False),
        (a[20:], False),
        (b + bot[:2], False),
        (bot[2:] + new, False),
        (late, False),
        (held, True),
    ]


def after() -> Batches:
    """The rest: more of the second minute (four flipped labels), then a third minute."""
    rows, labels = draw(31, 12)
    b = records(
        rows,
        flip(labels[:4]) + labels[4:],
        source=[f"s{i % 3}" for i in range(12)],
        start=T0 + 100,
        span=15,
        prefix="b2-",
    )
    rows, labels = draw(32, 12)
    c = records(
        rows, labels, source=[f"s{i % 4}" for i in range(12)], start=T0 + 125, span=30, prefix="c"
    )
    return [(b, False), (c, False)]


def new_guard() -> PoisoningGuard:
    return PoisoningGuard(POLICY, trusted(), profile())


def go_on(guard: PoisoningGuard) -> tuple[list[object], list[object]]:
    """Screen ``after()``; the verdicts in short and every report due, flushed."""
    verdicts: list[object] = []
    for part, held in after():
        verdicts += [(v.record_id, v.passed, v.reasons) for v in guard.screen(part, held=held)]
    reports = [r.model_dump(mode="json") for r in guard.reports() + guard.flush()]
    return verdicts, reports


def stored() -> GuardState:
    """The stored state as the agent's table gives it back (MessagePack and back)."""
    value: GuardState = state_codec.loads(state_codec.dumps(v1.STATE))
    return value


def test_a_state_stored_before_the_split_restores_and_goes_on_as_it_did() -> None:
    guard = new_guard()
    guard.restore(stored())
    assert guard.state() == v1.STATE
    assert go_on(guard) == (v1.VERDICTS, v1.REPORTS)


def test_the_guard_writes_the_stored_layout_for_the_same_records() -> None:
    guard = new_guard()
    for part, held in before():
        guard.screen(part, held=held)
    assert guard.state() == v1.STATE


def test_the_stored_state_holds_every_part() -> None:
    """So that the two tests above read each part of the layout."""
    state = v1.STATE
    (window,) = state["windows"]
    assert window["late"] == 1 and window["released"] == 2 and window["flags"]
    assert state["reports"] and state["duplicates"][0]["flooding"] == ["bot"]
    histories = state["sources"]["histories"]
    assert any(h["suspect_until"] for h in histories) and state["sources"]["windows"]


def test_live_state_loads_what_it_dumps_and_refuses_another_version() -> None:
    guard = new_guard()
    live = LiveState.load(guard.checks, stored())
    assert live.dump() == v1.STATE
    assert LiveState.fresh(guard.checks).dump() == new_guard().state()
    with pytest.raises(ValueError, match="guard state version 2 is not 1"):
        LiveState.load(guard.checks, {**v1.STATE, "version": 2})


def test_window_counts_count_records_and_round_trip() -> None:
    counts = WindowCounts(late=2, released=1)
    names = [counts.bucket(s, max_sources=2) for s in ["a", "b", "c", "a"]]
    assert names == ["a", "b", OTHER_SOURCES, "a"]
    counts.add("a", ())
    counts.add("a", ("duplicate_flood", "new_source_burst"))
    counts.add(OTHER_SOURCES, ("out_of_range",))
    counts.details["a"] = "why"
    assert counts.sources == {
        "a": Counts(2, 1, Counter({"duplicate_flood": 1, "new_source_burst": 1})),
        "b": Counts(),
        OTHER_SOURCES: Counts(1, 0, Counter({"out_of_range": 1})),
    }
    assert counts.flags == {"a": {"new_source_burst"}}
    state = state_codec.loads(state_codec.dumps(counts.dump(60_000)))
    assert WindowCounts.load(state) == (60_000, counts)
