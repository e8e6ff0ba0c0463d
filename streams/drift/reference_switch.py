"""Which reference judges a window: decided here, and only here.

A version's reference is built from its warm-up, or published on the
``references`` topic (``driftline reference build``), and a published one may
replace it at any time. Windows already open were counted on the old
reference's bins, so they keep it until they close; windows that open after
the switch use the new one. The agent stores the references apart from the
state (tens of KB, fixed once built, so each batch writes only the small
window state): :func:`attach` puts them back and notices a new one by its
:func:`stamp`, :func:`detach` takes them out again before the state is stored.

* :func:`switch`: the new reference from the next window on. Open windows
  keep ``previous_reference`` until ``reference_from_ms`` (the first window
  start that uses the new one); windows opened during the warm-up (no previous
  reference) were counted without bins and are reported, not judged. Without
  open windows the switch is immediate.
* :func:`judged_by_previous`: whether a window ends before the switch.
* :func:`settled`: every window counted on the previous reference has closed;
  the agent may drop its stored copy.

State: the two references (bounded by the policy's features; see
``streams.drift.state``) and one number.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streams.drift.state import Reference, VersionState


def stamp(reference: Any) -> str:
    """What tells two references of a version apart."""
    return (
        f"{reference['kind']}:{reference.get('start_ms')}:{reference.get('end_ms')}:"
        f"{reference.get('n')}:{reference.get('source', '')}"
    )


def attach(
    state: VersionState,
    current: Reference | None,
    previous: Reference | None,
    *,
    pane_ms: int | None = None,
    pane_end: Callable[[int], int] | None = None,
) -> VersionState:
    """The state with its stored references put back: ``current`` (None: none stored
    yet, the warm-up builds one) and ``previous`` (the one open windows may keep). A
    ``current`` the state has not seen (another stamp) is a switch."""
    if current is None:
        return state
    if state.get("reference_stamp") != stamp(current):
        return switch(state, current, previous, pane_ms=pane_ms, pane_end=pane_end)
    state["reference"] = current
    if state.get("reference_from_ms") is not None:
        state["previous_reference"] = previous
    return state


def detach(state: VersionState) -> VersionState:
    """The state as stored: its references out, the current one's stamp in."""
    reference = state["reference"]
    return {
        **state,
        "reference": None,
        "previous_reference": None,
        "reference_stamp": stamp(reference) if reference is not None else None,
    }


def switch(
    state: VersionState, reference: Reference, previous: Reference | None, *,
    pane_ms: int | None = None, pane_end: Callable[[int], int] | None = None,
) -> VersionState:
    """Judge against ``reference`` from the next window on (see the module's docstring).
    ``pane_ms``: the panes' length; ``pane_end``: the end of the pane starting at a
    given time, for panes of varying length (calendar periods, count windows)."""
    state = {**state, "reference": reference}
    open_starts = [int(k) for k in state["windows"]]
    if not open_starts:
        state["previous_reference"], state["reference_from_ms"] = None, None
        return state
    state["previous_reference"] = previous
    last = max(open_starts)
    if pane_end is not None:
        state["reference_from_ms"] = pane_end(last)
    elif pane_ms is not None:
        state["reference_from_ms"] = last + pane_ms
    else:
        raise TypeError("switch needs pane_ms or pane_end")
    return state


def judged_by_previous(state: VersionState, start_ms: int, window_ms: int) -> bool:
    """Whether the window starting at ``start_ms`` ends before the reference changed."""
    cut = state.get("reference_from_ms")
    return cut is not None and start_ms + window_ms <= cut


def settled(state: VersionState) -> bool:
    """No window counted on the previous reference is open any more."""
    return state.get("reference_from_ms") is None
