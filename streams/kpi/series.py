"""A KPI series' windows: which are open, when each is reported, when it retires.

A series is one model version and variant. Its windows are fixed ``window``
durations or calendar periods of event time (``start_of``), or counts of its
predictions (below); each is a ``streams.kpi.window`` fold,
and this module keeps the series' part of the fold over them, in one plain
JSON-able :class:`SeriesState` the KPI agent stores beside the windows:

* :func:`arrive`: a prediction for the window starting at ``start_ms`` is
  folded in (``"open"``), folded in although the window was already reported
  (``"late"``, counted: the next report says how many), or only counted,
  because its window is retired (``"lost"``: its labels could no longer join);
* :func:`open_window` / :func:`touch`: a window gets a mark when it first
  receives something, and is marked changed whenever it changes;
* :func:`close`: the windows the join's clocks (the watermark: the latest
  ``ts`` seen on predictions and on labels) and, on the agent's timer,
  processing time make due (``streams.kpi.revisions`` states the rules): each
  one's revision number, whether it is final, and the late and lost counts its
  report carries. A final window's mark is dropped: the caller drops its
  accumulators;
* :func:`report`: the :class:`KpiReport` for one of them, with its notes.

The processing time of a window's last change (``changed_ms``) is not in the
state (``streams.kpi.revisions`` says why): the caller passes it to
:func:`close`.

**Count windows** (``kpi.window: {events: N}``, NannyML's chunk size). Every N
predictions of the series form one window, in the order the KPI agent folds them:
offset order of the model's partition of ``predictions`` (the same on a replay
from the start of the topics; with several partitions each model's predictions
are on one, so the count is per model version and variant per partition).
Prediction ``i`` of the series (counting from its first, :func:`count_keys`) is in
window ``i // N``, whatever its time: the window's *key* (where a time window has
its start) is that index, and the label join keeps it with the waiting prediction
(``Waiting["i"]``), so a label however late joins the window its prediction was
counted in. The series keeps the count (``counted``) and each window's earliest
and latest prediction time (its mark's ``first_ms``/``last_ms``, :func:`span`):

* **first** report as soon as its Nth prediction is folded in (the watermark and
  ``allowed_lateness`` do not apply: nothing is late, ``late`` stays 0); the
  partial window never reports, as a drift count window;
* **revisions** as for time windows, with the window's time span (latest less
  earliest prediction time, at least ``revision_delay``) as the event time that
  must pass between two;
* **final** as for a time window ending at the label join's time bucket of its
  latest prediction (at least that of every earlier window still open, so count
  windows retire in order): no label can join it after that.

Bounds: at most ``label_ttl / window + 1`` open windows, 3 numbers a mark (a
window retires once its predictions' labels are joined or expired, or, should
labels stall for good, once the predictions' clock is twice ``label_ttl``
past its end). Count windows: the partial window, and the full ones whose latest
prediction is younger than ``label_ttl`` plus a join bucket (about ``rate x
label_ttl / N``), 5 numbers a mark, and one integer, the count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, NotRequired, TypedDict

from schemas.policy import KpiPolicy
from schemas.reports import ConceptDetectorInfo, KpiReport, ShadowComparison
from schemas.windows import CountWindow
from streams.kpi.revisions import WindowMark, due
from streams.kpi.window import KpiResult
from streams.windows import TimeWindow, longest_ms, tumbling

Arrival = Literal["open", "late", "lost"]

#: Before any window: an int, not None, so the state stays one JSON shape.
_NEVER = -(2**62)


class SeriesState(TypedDict):
    windows: dict[str, WindowMark]  # open windows by start, ms (a string: a JSON key)
    closed_until_ms: int  # windows before this have been reported at least once
    retired_until_ms: int  # windows before this are gone (later predictions are lost)
    late: int  # predictions for reported windows, since the last report
    lost: int  # predictions for retired windows (counted, never joined)
    #: count windows only: the series' predictions folded so far (the next one's ordinal)
    counted: NotRequired[int]


#: The label join's time bucket under count windows, at most (a join bucket is the
#: window's length, at most ``label_ttl``, for time windows): a count window retires a
#: bucket after its latest prediction's ``label_ttl``, and a model keeps ``label_ttl /
#: bucket + 1`` buckets open.
COUNT_BUCKET_MS = 3_600_000


@dataclass(frozen=True)
class Due:
    """A report ``close`` found due: its window, revision, and the counts it carries."""

    start_ms: int
    revision: int
    final: bool
    late: int  # predictions that came after their window's first report, since the last one
    lost: int  # predictions for retired windows, since the last report
    #: count windows: the window's number, its earliest prediction time and 1 ms past its
    #: latest (its report's window_index, window_start, window_end)
    window_index: int | None = None
    first_ms: int = 0
    end_ms: int = 0


def initialize() -> SeriesState:
    return {
        "windows": {},
        "closed_until_ms": _NEVER,
        "retired_until_ms": _NEVER,
        "late": 0,
        "lost": 0,
    }


def start_of(ts_ms: int, window: TimeWindow) -> int:
    """The start of the window holding ``ts_ms``: of ``window`` ms (epoch-aligned), or
    the calendar period (``streams.calendar``)."""
    if isinstance(window, int):
        return ts_ms - ts_ms % window
    return tumbling(window).start(ts_ms)


def bucket_ms(policy: KpiPolicy) -> int:
    """The label join's time bucket (``streams.join``) for the policy's windows: the
    window's longest length (a bucket never spans two windows' ends), at most
    ``label_ttl``; ``COUNT_BUCKET_MS`` at most for count windows."""
    if isinstance(policy.window, CountWindow):
        return min(COUNT_BUCKET_MS, policy.label_ttl)
    return min(longest_ms(policy.window), policy.label_ttl)


def count_key(state: SeriesState, events: int) -> int:
    """The count window (of ``events``) of the series' next prediction; counts it.

    >>> state = initialize()
    >>> [count_key(state, 3) for _ in range(7)], state["counted"]
    ([0, 0, 0, 1, 1, 1, 2], 7)
    """
    if "counted" not in state:
        # the first count of the series (or kpi.window became a count): its bounds so far,
        # if any, were times, not window numbers
        state["closed_until_ms"] = state["retired_until_ms"] = _NEVER
    ordinal = state.get("counted", 0)
    state["counted"] = ordinal + 1
    return ordinal // events


def span(state: SeriesState, key: int, first_ms: int, last_ms: int) -> None:
    """The open count window ``key`` holds predictions from ``first_ms`` to ``last_ms``."""
    mark = state["windows"][str(key)]
    mark["first_ms"] = min(mark.get("first_ms", first_ms), first_ms)
    mark["last_ms"] = max(mark.get("last_ms", last_ms), last_ms)


def end_of(start_ms: int, window: TimeWindow) -> int:
    """The end of the window starting at ``start_ms``."""
    return start_ms + window if isinstance(window, int) else tumbling(window).window_end(start_ms)


def arrive(state: SeriesState, start_ms: int, n: int = 1) -> Arrival:
    """Where ``n`` predictions (or labeled ones) for the window at ``start_ms`` go;
    counts the late and the lost."""
    if retired(state, start_ms):
        state["lost"] += n
        return "lost"
    if start_ms < state["closed_until_ms"]:
        state["late"] += n
        return "late"
    return "open"


def retired(state: SeriesState, start_ms: int) -> bool:
    """The window at ``start_ms`` was finally reported and dropped."""
    return start_ms < state["retired_until_ms"]


def is_open(state: SeriesState, start_ms: int) -> bool:
    return str(start_ms) in state["windows"]


def open_window(state: SeriesState, start_ms: int) -> bool:
    """Give the window at ``start_ms`` a mark (changed, never reported); False if it had one."""
    if is_open(state, start_ms):
        return False
    state["windows"][str(start_ms)] = {"rev": -1, "dirty": True, "emitted_ms": 0}
    return True


def touch(state: SeriesState, start_ms: int) -> None:
    """The open window at ``start_ms`` changed since its last report."""
    state["windows"][str(start_ms)]["dirty"] = True


def changed(state: SeriesState) -> list[int]:
    """Open windows changed since their last report, by start."""
    return [int(s) for s, mark in state["windows"].items() if mark["dirty"]]


def close(
    state: SeriesState,
    policy: KpiPolicy,
    *,
    predictions_ms: int,
    labels_ms: int | None,
    now_ms: int | None = None,
    changed_ms: Mapping[int, int] | None = None,
) -> list[Due]:
    """The reports due, oldest window first, with the state moved past them: marks
    bumped, final windows dropped. ``predictions_ms``/``labels_ms``: the join's
    clocks; ``now_ms``: processing time (None: event time only, the per-message
    path); ``changed_ms``: processing time of each changed window's last change."""
    changed_ms = changed_ms or {}
    event_now = max(predictions_ms, labels_ms or predictions_ms)
    count = policy.window.events if isinstance(policy.window, CountWindow) else None
    if count is None:
        state.pop("counted", None)  # kpi.window is no count (any more): counts restart
    full = state.get("counted", 0) // count if count is not None else 0
    bucket = bucket_ms(policy)
    latest = _NEVER  # count windows: the latest prediction time of the open ones so far
    out: list[Due] = []
    for start_s in sorted(state["windows"], key=int):
        start = int(start_s)
        mark = state["windows"][start_s]
        if count is None:
            end = end_of(start, policy.window)
            window_ms, closed = end - start, None
        elif "last_ms" not in mark:
            # opened under a window of time (kpi.window changed form): reported a last
            # time, at once; its predictions' labels still to come are counted as lost
            mark["rev"] += 1
            out.append(Due(start, mark["rev"], True, state["late"], state["lost"]))
            state["late"] = state["lost"] = 0
            del state["windows"][start_s]
            continue
        elif start >= full:
            continue  # the partial count window: never reported until its Nth prediction
        else:
            latest = max(latest, mark["last_ms"])
            end = latest - latest % bucket + bucket  # where the join drops its predictions
            window_ms = max(mark["last_ms"] - mark["first_ms"], policy.revision_delay, 1)
            closed = True
        verdict = due(
            mark,
            start_ms=end - window_ms,
            window_ms=window_ms,
            allowed_lateness_ms=policy.allowed_lateness,
            label_ttl_ms=policy.label_ttl,
            revision_delay_ms=policy.revision_delay,
            predictions_ms=predictions_ms,
            labels_ms=labels_ms,
            now_ms=now_ms,
            changed_ms=changed_ms.get(start),
            closed=closed,
        )
        if verdict is None:
            continue
        # count windows: keys are window numbers, so "until" is the next number
        until = end if count is None else start + 1
        mark["rev"] += 1
        mark["dirty"] = False
        mark["emitted_ms"] = event_now
        state["closed_until_ms"] = max(state["closed_until_ms"], until)
        out.append(Due(
            start, mark["rev"], verdict == "final", state["late"], state["lost"],
            *((start, mark["first_ms"], mark["last_ms"] + 1) if count is not None else ()),
        ))
        state["late"] = state["lost"] = 0
        if verdict == "final":
            del state["windows"][start_s]
            state["retired_until_ms"] = max(state["retired_until_ms"], until)
    return out


def report(
    model: str,
    version: str,
    variant: str,
    result: KpiResult,
    emit: Due,
    *,
    window_ms: int,
    orphans: int,
    concept: ConceptDetectorInfo | None = None,
    shadow: list[ShadowComparison] | None = None,
) -> KpiReport:
    """The report of one due window: its ``streams.kpi.window`` result, with notes on
    what it cannot show (``orphans``: the model's labels that never met their
    prediction so far). ``window_ms``: a time window's length (a count window's
    bounds are in ``emit``)."""
    notes = list(result.notes)
    if emit.lost:
        notes.append(
            f"{emit.lost} predictions arrived after their window was retired "
            f"(older than label_ttl) and were counted only here"
        )
    if orphans:
        notes.append(
            f"{orphans} labels of this model never met their prediction "
            "within label_ttl so far (orphan labels)"
        )
    if emit.final:
        notes.append("final revision: label_ttl has passed, no later label can change it")
    counted = emit.window_index is not None
    return KpiReport(
        model=model,
        model_version=version,
        variant=variant,  # type: ignore[arg-type]
        window_start=_utc(emit.first_ms if counted else emit.start_ms),
        window_end=_utc(emit.end_ms if counted else emit.start_ms + window_ms),
        window_index=emit.window_index,
        n_predictions=result.n_predictions,
        n_labeled=result.n_labeled,
        metrics=result.metrics,
        concept_drift=result.concept_drift,
        status=result.status,
        revision=emit.revision,
        late=emit.late,
        final=emit.final,
        breaches=result.breaches,
        segments=result.segments,
        disparity=result.disparity,
        notes=notes,
        estimated_metrics=result.estimated_metrics,  # type: ignore[arg-type]
        thresholds=result.thresholds,
        bands=result.bands,
        estimated=result.estimated,
        concept=concept,
        shadow=shadow,
    )


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
