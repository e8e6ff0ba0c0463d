"""The poisoning guard's state (streams/poisoning/guard.py ``state``/``restore``): a guard
restored from another's state after N records, then fed the rest, gives exactly the
verdicts and reports of one guard fed everything; the state is plain data that survives
the agents' table codec; a state of another trusted set or version is refused."""

from __future__ import annotations

import functools

import pytest

from agents.runtime import state_codec
from schemas.events import TrainingRecord
from schemas.poisoning import PoisoningPolicy
from schemas.reports import PoisoningReport
from streams.poisoning.guard import PoisoningGuard, Verdict
from tests.streams.poisoning.test_data import T0, draw, profile, records, trusted

POLICY = PoisoningPolicy.model_validate(
    {"window": "10m", "allowed_lateness": "1m", "new_source_burst": 30, "max_open_windows": 3}
)
BATCH = 40


@functools.cache
def fitted() -> tuple[object, object]:
    return trusted(), profile()


def new_guard(policy: PoisoningPolicy = POLICY) -> PoisoningGuard:
    t, p = fitted()
    return PoisoningGuard(policy, t, p)  # type: ignore[arg-type]


def stream(seed: int) -> list[TrainingRecord]:
    """Four 10-minute windows from five honest sources (s2 flips a fifth of its labels),
    a duplicate flood from ``bot`` over the whole second window, a new source ``newbie``
    bursting in from the third, and a few late records; in batches' order."""
    rows, labels = draw(seed, 1600)
    names = [f"s{i % 5}" for i in range(1600)]
    sent = [1.0 - v if names[i] == "s2" and i % 5 == 0 else v for i, v in enumerate(labels)]
    honest = records(rows, sent, source=names, start=T0, span=2400, prefix=f"h{seed}-")
    copy_rows, copy_labels = draw(seed + 100, 2)
    flood = records(
        [copy_rows[i % 2] for i in range(60)],
        [copy_labels[i % 2] for i in range(60)],
        source="bot",
        start=T0 + 600,
        span=590,
        prefix="bot-",
    )
    new_rows, new_labels = draw(seed + 200, 80)
    newbie = records(
        new_rows, new_labels, source="newbie", start=T0 + 1250, span=500, prefix="new-"
    )
    late_rows, late_labels = draw(seed + 300, 6)
    late = records(late_rows, late_labels, source="s1", start=T0 + 30, span=60, prefix="late-")
    out = sorted(honest + flood + newbie, key=lambda r: (r.ts, r.record_id))
    at = len(out) * 3 // 4  # the late ones arrive with the last window
    return out[:at] + late + out[at:]


def batches(recs: list[TrainingRecord]) -> list[list[TrainingRecord]]:
    return [recs[i : i + BATCH] for i in range(0, len(recs), BATCH)]


Run = tuple[list[Verdict], list[PoisoningReport]]


def feed(guard: PoisoningGuard, parts: list[list[TrainingRecord]], *, take: bool = True) -> Run:
    verdicts: list[Verdict] = []
    reports: list[PoisoningReport] = []
    for part in parts:
        verdicts += guard.screen(part)
        if take:
            reports += guard.reports()
    return verdicts, reports


def through_table(guard: PoisoningGuard) -> object:
    """The state as the agent stores it: encoded to bytes and decoded again."""
    return state_codec.loads(state_codec.dumps(guard.state()))


@functools.cache
def whole(seed: int) -> Run:
    guard = new_guard()
    verdicts, reports = feed(guard, batches(stream(seed)))
    return verdicts, reports + guard.flush()


# Split points (in batches of 40 of about 1,750 records): in the first window; inside
# the flood's window (37 of its 60 copies sent); inside the new source's burst (13 of its
# 80 records sent); in the last window, after the late records. Reports taken after
# each batch, or left pending in the state.
CASES = [(seed, split, True) for seed in (11, 12, 13) for split in (3, 17, 24, 41)] + [
    (11, 17, False),
    (12, 24, False),
]


@pytest.mark.parametrize(("seed", "split", "take_reports"), CASES)
def test_a_restored_guard_goes_on_exactly_as_one_guard(
    seed: int, split: int, take_reports: bool
) -> None:
    parts = batches(stream(seed))
    first = new_guard()
    verdicts, reports = feed(first, parts[:split], take=take_reports)
    second = new_guard()
    second.restore(through_table(first))  # type: ignore[arg-type]
    assert second.state() == first.state()
    more, later = feed(second, parts[split:])
    expected_verdicts, expected_reports = whole(seed)
    assert verdicts + more == expected_verdicts
    got = reports + later + second.flush()
    assert [r.model_dump() for r in got] == [r.model_dump() for r in expected_reports]
    assert len(got) == 4


@pytest.mark.parametrize("seed", [11, 12])
def test_without_its_state_a_guard_counts_a_flood_and_a_burst_in_halves(seed: int) -> None:
    """What the test above guards against: a guard started afresh mid-window misses part
    of the flood and takes the new source for an old one (or the reverse)."""
    parts = batches(stream(seed))
    first = new_guard()
    verdicts, _ = feed(first, parts[:24])
    more, _ = feed(new_guard(), parts[24:])
    expected, _ = whole(seed)
    assert verdicts + more != expected
    done = sum(len(p) for p in parts[:17])  # inside the flood's window
    one = [v.record_id for v in expected[done:] if v.source == "bot" and v.passed]
    fresh = feed(new_guard(), parts[17:])[0]
    two = [v.record_id for v in fresh if v.source == "bot" and v.passed]
    assert one == []  # one guard holds the rest of the flood
    assert len(two) >= 2  # a fresh one lets the first copies of each key pass again


def test_the_state_is_plain_data_that_survives_the_table_codec() -> None:
    guard = new_guard()
    feed(guard, batches(stream(11))[:20], take=False)
    state = guard.state()
    again = state_codec.loads(state_codec.dumps(state))
    assert again == state
    assert state["windows"] and state["duplicates"] and state["sources"]["histories"]


def test_a_state_of_another_trusted_set_or_version_is_refused_and_changes_nothing() -> None:
    guard = new_guard()
    feed(guard, batches(stream(11))[:20])
    state = guard.state()
    other = PoisoningGuard(POLICY, trusted(), None)
    other.screen([])
    fewer = PoisoningGuard(POLICY.model_copy(update={"label_check": False}), trusted(), profile())
    before = fewer.state()
    with pytest.raises(ValueError, match="classes, columns, levels"):
        fewer.restore(state)
    assert fewer.state() == before
    with pytest.raises(ValueError, match="version"):
        guard.restore({**state, "version": 99})  # type: ignore[typeddict-item]


def test_a_restored_state_keeps_the_policy_bounds() -> None:
    """A state kept under larger bounds is cut to the policy's: the oldest keys and the
    least recently seen sources go, as they would have."""
    guard = new_guard()
    feed(guard, batches(stream(11))[:30])
    small = POLICY.model_copy(
        update={"duplicate_cache_size": 100, "max_sources": 3, "source_history": 1}
    )
    cut = new_guard(small)
    cut.restore(guard.state())
    size = cut.state_size()
    assert size["duplicate_keys"] == 100
    assert size["source_histories"] == 3
    assert size["source_history_volumes"] == 1
    kept = [h["source"] for h in cut.state()["sources"]["histories"]]
    assert kept == [h["source"] for h in guard.state()["sources"]["histories"]][-3:]


def test_reset_forgets_windows_and_sources() -> None:
    guard = new_guard()
    feed(guard, batches(stream(11))[:10])
    guard.reset()
    assert guard.state() == new_guard().state()
