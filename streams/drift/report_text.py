"""A closed window's DriftReport: every feature compared with the reference and judged
(``streams.drift.judge``), the multivariate signal, the status, the features that
moved strongest first, the thresholds that applied, and notes in words for
everything a reader could otherwise misread (a window not judged and why, a
feature not in the reference, features not tracked, a reference without a
multivariate part).
"""

from __future__ import annotations

from collections.abc import Callable

from schemas.policy import DriftPolicy
from schemas.reports import DriftReport, DriftStatus, FeatureDrift
from streams.batch import Kind
from streams.drift import multivariate as mv
from streams.drift.compare import Comparison
from streams.drift.judge import judge_feature, judge_multivariate
from streams.drift.state import (
    MAX_UNTRACKED_NAMES,
    MULTIVARIATE,
    OUTPUTS,
    Reference,
    VersionState,
    WindowAcc,
    iso,
    policy_name,
    reference_info,
)

#: The window's features ``names`` (all in the reference) compared with it.
Compare = Callable[[Reference, list[str], WindowAcc], dict[str, Comparison]]


def window_report(
    policy: DriftPolicy,
    compare: Compare,
    state: VersionState,
    acc: WindowAcc,
    late: int,
    *,
    judge: bool = True,
    since_ms: int | None = None,
    end_ms: int | None = None,
) -> DriftReport:
    """``since_ms``: a hopping window that spans a change of reference; only its
    panes from then on (counted on the new reference's bins) are in ``acc``.
    ``end_ms``: the window's end (default: a duration ``window`` after its start)."""
    ref = state["reference"]
    assert ref is not None
    p = policy
    notes: list[str] = []
    enough = judge and acc["n"] >= p.min_window_events
    if since_ms is not None:
        notes.append(
            "the reference changed during this window: only its events from "
            f"{iso(since_ms).isoformat()} on, counted on the new reference's bins, are "
            "reported, and it is not judged"
        )
    elif not judge:
        notes.append(
            "this window was already open when the reference profile arrived: its "
            "values were not counted on the profile's bins, so it is reported, not judged"
        )
    elif not enough:
        notes.append(
            f"only {acc['n']} events in this window; at least {p.min_window_events} "
            "are needed before a feature is flagged"
        )
    names = []
    for name in sorted(state["kinds"]):
        if name not in ref["features"]:
            if name in acc["numeric"] or name in acc["categorical"]:
                notes.append(f"feature {name!r} is not in the reference and is not judged")
            continue
        names.append(name)
    compared: dict[str, tuple[Kind, Comparison]] = {
        name: (ref["features"][name]["kind"], c)
        for name, c in compare(ref, names, acc).items()
    }
    if state["untracked"]:
        shown = ", ".join(state["untracked"][:5])
        more = "" if len(state["untracked"]) < MAX_UNTRACKED_NAMES else " (and maybe more)"
        notes.append(
            f"{len(state['untracked'])} features beyond max_features={p.max_features} "
            f"are not tracked{more}: {shown}"
        )
    pca = ref.get("multivariate") if p.multivariate else None
    partial = "mv_halves" in acc or ("mv" in acc and acc["mv"] is None)
    sums = acc.get("mv") if pca is not None and not partial else None
    if p.multivariate:
        notes.extend(multivariate_notes(state, ref, partial))
    if pca is not None:
        notes.extend(ignored_in_multivariate(policy, pca, ref))
    # Bonferroni: noise alone flags any judged feature (or the multivariate signal)
    # in at most false_alarm_rate of windows. Ignored features are not tests.
    settings = {name: p.for_feature(policy_name(name)) for name in compared}
    tests = sum(not t.ignore for t in settings.values()) + (sums is not None)
    alpha = p.false_alarm_rate / max(tests, 1)
    streaks = dict(state["streaks"])
    results: dict[str, FeatureDrift] = {}
    for name, (kind, c) in compared.items():
        results[name] = judge_feature(
            policy, kind, c, enough, alpha, streaks, name, settings[name]
        )
    multivariate = (
        judge_multivariate(policy, pca, sums, alpha, streaks)
        if pca is not None and sums is not None
        else None
    )
    state["streaks"] = streaks
    prediction = {OUTPUTS[k]: results.pop(k) for k in list(results) if k in OUTPUTS}
    judged = {**results, **{f"prediction.{k}": v for k, v in prediction.items()}}
    # Features by PSI; the joint signal after them: a feature names the cause,
    # and a marginal shift usually raises the reconstruction error too.
    ranked = sorted(
        (n for n, r in judged.items() if r.status != "ok"),
        key=lambda n: -judged[n].metrics["psi"],
    )
    statuses = {r.status for r in judged.values()}
    if multivariate is not None and multivariate.status != "ok":
        ranked.append(MULTIVARIATE)
        statuses.add(multivariate.status)
    status: DriftStatus = (
        "drift" if "drift" in statuses else "warn" if "warn" in statuses else "ok"
    )
    thresholds = {
        "psi_warn": p.psi_warn,
        "psi_drift": p.psi_drift,
        "false_alarm_rate": p.false_alarm_rate,
        "consecutive": p.consecutive,
    }
    if multivariate is not None:
        thresholds["multivariate_warn"] = p.multivariate_warn
        thresholds["multivariate_drift"] = p.multivariate_drift
    return DriftReport(
        model=state["model"],
        model_version=state["model_version"],
        window_start=iso(acc["start_ms"]),
        window_end=iso(acc["start_ms"] + p.window if end_ms is None else end_ms),
        n=acc["n"],
        late=late,
        reference=reference_info(ref),
        features=results,
        prediction=prediction,
        multivariate=multivariate,
        status=status,
        drifted_features=ranked,
        thresholds=thresholds,
        notes=notes,
    )


def ignored_in_multivariate(
    policy: DriftPolicy, pca: mv.PcaReference, ref: Reference
) -> list[str]:
    """Ignored features a reference built before they were ignored still has."""
    kept = [n for n in pca["names"] if n in policy.ignored()]
    if not kept:
        return []
    rebuild = (
        "rebuild and publish it with `driftline reference build`"
        if ref["kind"] == "profile"
        else "a new version's warm-up reference leaves them out"
    )
    return [
        f"the multivariate signal still includes {', '.join(kept)}, ignored by the policy: "
        f"the reference was built before they were ignored; {rebuild}"
    ]


def multivariate_notes(state: VersionState, ref: Reference, partial: bool) -> list[str]:
    """Why a window has no multivariate result, when it might have had one."""
    if "multivariate" not in ref:
        numeric = [n for n, k in state["kinds"].items() if k == "numeric" and n not in OUTPUTS]
        if len(numeric) < 2:
            return []
        rebuild = (
            "; rebuild and publish it with `driftline reference build`"
            if ref["kind"] == "profile"
            else ""
        )
        return [
            "the reference has no multivariate part (it was built before driftline judged "
            f"the joint distribution of the numeric features){rebuild}"
        ]
    pca = ref["multivariate"]
    if pca is not None and "limits" not in pca:
        rebuild = (
            "rebuild and publish it with `driftline reference build`"
            if ref["kind"] == "profile"
            else "a new version's warm-up reference has them"
        )
        return [
            "the multivariate reference predates clipping and categorical features: one "
            f"extreme event can dominate its error, and categorical features are not in it; "
            f"{rebuild}"
        ]
    if pca is not None and partial and ref["kind"] == "profile":
        # (after a warm-up, the report that completed it said so)
        return [
            "the multivariate signal is not judged in this window: some of its events were "
            "counted before the reference profile arrived"
        ]
    return []
