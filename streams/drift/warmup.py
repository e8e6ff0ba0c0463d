"""The warm-up reference: a version's first window(s), until ``min_reference_events``
events; its bins are their quantiles and top categories, its multivariate part a
PCA fitted on half of the warm-up's events and measured on the other half.
"""

from __future__ import annotations

from typing import cast

from schemas.policy import DriftPolicy, format_duration_ms
from schemas.reports import DriftReport, ReferenceInfo
from streams.drift import multivariate as mv
from streams.drift.panes import Summaries, merge
from streams.drift.reference import ReferenceFeature, categorical_reference, numeric_reference
from streams.drift.state import Reference, VersionState, WindowAcc, iso, new_window
from streams.windows import CalendarWindows, FixedWindows, scheme


def absorb_warmup(
    policy: DriftPolicy, summaries: Summaries, state: VersionState, acc: WindowAcc,
    pane: WindowAcc | None, late: int, windows: FixedWindows | CalendarWindows | None = None,
) -> DriftReport:
    """Report the window ``acc`` of the warm-up and add its first ``pane`` (the one
    it retires; the window itself when tumbling) to the warm-up reference."""
    p = policy
    windows = windows or scheme(p.window, p.hop)
    end = windows.window_end(acc["start_ms"])
    pane_end = windows.pane_end(acc["start_ms"])  # the warm-up's end once ``pane`` is in
    warm = state["warmup"]
    if pane is not None:
        warm = pane if warm is None else merge(summaries, warm, pane)
    if warm is None:  # hopping: no events in the panes the warm-up has seen yet
        warm = new_window(acc["start_ms"])
    need = p.min_reference_events
    part = (
        "this window is part of the reference"
        if windows.tumbling
        else f"the first {format_duration_ms(p.pane)} of this window are part of the reference"
    )
    notes = []
    # count windows: the warm-up's span in event time, not in chunk indices
    since = warm.get("first_ms", warm["start_ms"])
    until = warm["last_ms"] + 1 if "last_ms" in warm else pane_end
    if warm["n"] >= need:
        ref = build_reference(
            policy, summaries, warm, until, state.pop("mv_names", None),
            state.pop("mv_categorical", None),
        )
        state.pop("mv_limits", None)
        state["reference"] = ref
        state["warmup"] = None
        unjudged = drop_halves(policy, state, after_ms=acc["start_ms"], windows=windows)
        notes.append(
            f"this window completes the warm-up reference ({warm['n']} events since "
            f"{iso(since).isoformat()}); later windows are compared with it"
        )
        pca = ref.get("multivariate")
        if pca is not None:
            notes.append(
                f"multivariate signal: {len(pca['components'])} principal components of "
                f"{mv.describe_features(pca)} explain "
                f"{pca['explained']:.0%} of their variance; their reconstruction error on "
                f"{pca['n_baseline']} held-out warm-up events is {pca['baseline']:.4f}"
            )
            if unjudged:
                starts = (
                    "number " + ", ".join(map(str, unjudged)) if "first_ms" in acc  # count
                    else "starting " + ", ".join(iso(ms).isoformat() for ms in unjudged)
                )
                many = len(unjudged) > 1
                notes.append(
                    f"the window{'s' if many else ''} {starts} will not be judged "
                    f"by the multivariate signal: some of {'their' if many else 'its'} "
                    "events were counted before this reference was complete"
                )
    else:
        state["warmup"] = warm if warm["n"] else None
        notes.append(
            f"building the warm-up reference: {warm['n']} of at least {need} events so far; "
            "no drift is judged until it is complete"
        )
    return DriftReport(
        model=state["model"],
        model_version=state["model_version"],
        window_start=iso(acc["start_ms"]),
        window_end=iso(end),
        n=acc["n"],
        late=late,
        reference=ReferenceInfo(
            kind="warmup",
            window_start=iso(since),
            window_end=iso(until),
            n=warm["n"],
            note=part,
        ),
        features={},
        status="ok",
        notes=notes,
    )


def drop_halves(
    policy: DriftPolicy, state: VersionState, *, after_ms: int,
    windows: FixedWindows | CalendarWindows | None = None,
) -> list[int]:
    """Open windows drop their moments once the reference is built, and are not
    judged by the multivariate signal: how many of their events were counted
    before the reference was complete depends on how events were batched, and
    reports must not (for events in time order, *whether* any was depends on
    event times only: the window right after the warm-up, mostly).

    Returns the starts of those windows (the windows after ``after_ms`` that
    hold one of those panes, when hopping)."""
    windows = windows or scheme(policy.window, policy.hop)
    dropped: set[int] = set()
    for key, acc in state["windows"].items():
        if "mv_halves" in acc:
            kept = cast(WindowAcc, {k: v for k, v in acc.items() if k != "mv_halves"})
            kept["mv"] = None
            state["windows"][key] = kept
            dropped.update(s for s in windows.windows_of(acc["start_ms"]) if s > after_ms)
    return sorted(dropped)


def build_reference(
    policy: DriftPolicy, summaries: Summaries, warm: WindowAcc, end_ms: int,
    mv_names: list[str] | None,
    mv_categorical: dict[str, list[str]] | None = None,
) -> Reference:
    p = policy
    features: dict[str, ReferenceFeature] = {}
    for name, st in warm["numeric"].items():
        features[name] = numeric_reference(
            summaries.numeric, st, bins=p.bins, fine_bins=p.fine_bins
        )
    for name, cst in warm["categorical"].items():
        features[name] = categorical_reference(cst, top_k=p.top_k)
    halves = warm.get("mv_halves")
    pca = (
        mv.fit(mv_names or [], halves, variance=p.multivariate_variance,
               categorical=mv_categorical)
        if p.multivariate and (mv_names or mv_categorical) and halves
        else None
    )
    return {
        "kind": "warmup",
        "start_ms": warm.get("first_ms", warm["start_ms"]),
        "end_ms": end_ms,
        "n": warm["n"],
        "features": features,
        "multivariate": pca,
    }
