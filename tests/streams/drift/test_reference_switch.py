"""Which reference judges a window: attach, switch, detach, settle."""

from __future__ import annotations

from typing import Any

from streams.drift import reference_switch
from streams.drift.state import Reference, VersionState, initialize, new_window

PANE = 60_000


def reference(n: int) -> Reference:
    return {"kind": "profile", "start_ms": 0, "end_ms": 1, "n": n, "features": {}}  # type: ignore[typeddict-item]


def stored(state: VersionState) -> VersionState:
    return reference_switch.detach(state)


def with_windows(*starts: int) -> VersionState:
    state = initialize("m", "v1")
    state["windows"] = {str(s): new_window(s) for s in starts}
    return state


def test_the_same_reference_is_put_back_as_it_was() -> None:
    old = reference(1)
    state = stored(reference_switch.switch(with_windows(), old, None, pane_ms=PANE))
    assert state["reference"] is None and state["reference_stamp"] == reference_switch.stamp(old)
    back = reference_switch.attach(state, old, None, pane_ms=PANE)
    assert back["reference"] is old and reference_switch.settled(back)


def test_a_new_reference_judges_from_the_next_window_and_open_ones_keep_the_old() -> None:
    old, new = reference(1), reference(2)
    state = stored(reference_switch.switch(with_windows(), old, None, pane_ms=PANE))
    state["windows"] = {"0": new_window(0), "60000": new_window(60_000)}
    switched = reference_switch.attach(state, new, old, pane_ms=PANE)
    assert switched["reference"] is new and switched["previous_reference"] is old
    assert switched["reference_from_ms"] == 120_000
    assert reference_switch.judged_by_previous(switched, 60_000, PANE)
    assert not reference_switch.judged_by_previous(switched, 120_000, PANE)
    assert not reference_switch.settled(switched)
    # stored and read back mid-switch: the previous one is put back for the open windows
    again = reference_switch.attach(stored(switched), new, old, pane_ms=PANE)
    assert again["previous_reference"] is old and again["reference_from_ms"] == 120_000


def test_without_open_windows_the_switch_is_immediate() -> None:
    old, new = reference(1), reference(2)
    state: Any = stored(reference_switch.switch(with_windows(), old, None, pane_ms=PANE))
    switched = reference_switch.attach(state, new, old, pane_ms=PANE)
    assert switched["reference"] is new and reference_switch.settled(switched)


def test_no_stored_reference_leaves_the_state_alone() -> None:
    state = with_windows(0)
    assert reference_switch.attach(state, None, None, pane_ms=PANE) is state
