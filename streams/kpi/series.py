"""A KPI series' windows: which are open, when each is reported, when it retires.

A series is one model version and variant. Its windows are fixed ``window``
durations of event time (``start_of``); each is a ``streams.kpi.window`` fold,
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

Bounds: at most ``label_ttl / window + 1`` open windows, 3 numbers a mark (a
window retires once its predictions' labels are joined or expired, or, should
labels stall for good, once the predictions' clock is twice ``label_ttl``
past its end).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, TypedDict

from schemas.policy import KpiPolicy
from schemas.reports import ConceptDetectorInfo, KpiReport, ShadowComparison
from streams.kpi.revisions import WindowMark, due
from streams.kpi.window import KpiResult
from streams.windows import TimeWindow, tumbling

Arrival = Literal["open", "late", "lost"]

#: Before any window: an int, not None, so the state stays one JSON shape.
_NEVER = -(2**62)


class SeriesState(TypedDict):
    windows: dict[str, WindowMark]  # open windows by start, ms (a string: a JSON key)
    closed_until_ms: int  # windows before this have been reported at least once
    retired_until_ms: int  # windows before this are gone (later predictions are lost)
    late: int  # predictions for reported windows, since the last report
    lost: int  # predictions for retired windows (counted, never joined)


@dataclass(frozen=True)
class Due:
    """A report ``close`` found due: its window, revision, and the counts it carries."""

    start_ms: int
    revision: int
    final: bool
    late: int  # predictions that came after their window's first report, since the last one
    lost: int  # predictions for retired windows, since the last report


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
    out: list[Due] = []
    for start_s in sorted(state["windows"], key=int):
        start = int(start_s)
        mark = state["windows"][start_s]
        verdict = due(
            mark,
            start_ms=start,
            window_ms=end_of(start, policy.window) - start,
            allowed_lateness_ms=policy.allowed_lateness,
            label_ttl_ms=policy.label_ttl,
            revision_delay_ms=policy.revision_delay,
            predictions_ms=predictions_ms,
            labels_ms=labels_ms,
            now_ms=now_ms,
            changed_ms=changed_ms.get(start),
        )
        if verdict is None:
            continue
        end = end_of(start, policy.window)
        mark["rev"] += 1
        mark["dirty"] = False
        mark["emitted_ms"] = event_now
        state["closed_until_ms"] = max(state["closed_until_ms"], end)
        out.append(Due(start, mark["rev"], verdict == "final", state["late"], state["lost"]))
        state["late"] = state["lost"] = 0
        if verdict == "final":
            del state["windows"][start_s]
            state["retired_until_ms"] = max(state["retired_until_ms"], end)
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
    prediction so far)."""
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
    return KpiReport(
        model=model,
        model_version=version,
        variant=variant,  # type: ignore[arg-type]
        window_start=_utc(emit.start_ms),
        window_end=_utc(emit.start_ms + window_ms),
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
