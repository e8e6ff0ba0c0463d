"""Windowed drift of one model version: a fold over a plain, serialisable state.

``DriftMonitor`` holds configuration only. Its state (``VersionState``) is a
JSON-able dict that the drift agent keeps in a Faust table, one per
``model@version``. Bounds on that state, all from the policy:

* features tracked: ``max_features`` (the names of up to ``MAX_UNTRACKED_NAMES``
  more are kept in ``untracked`` for the report);
* open windows: ``max_open_windows`` (the oldest closes early beyond that);
* per numeric feature and window: ``bins + 1`` counts, or a log-bucket sketch
  (at most 2,048 buckets) while the reference is still being built;
* per categorical feature and window: ``CategoricalSummary.MAX_CATEGORIES`` counts.

The reference is the first window(s) of the version, until at least
``min_reference_events`` events have been seen (a *warm-up* reference; reports
say so). Numeric bins are the reference's quantiles (``bins`` of them);
categorical bins are its ``top_k`` categories plus "other".
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, NotRequired, TypedDict

import numpy as np
import numpy.typing as npt

from schemas.policy import DriftPolicy
from schemas.reports import DriftReport, DriftStatus, FeatureDrift, ReferenceInfo
from streams.batch import (
    FeatureBatch,
    Kind,
    anchor_of,
    categorical_column,
    infer_kind,
    numeric_column,
)
from streams.drift.compare import Comparison, compare_categorical, compare_numeric
from streams.drift.psi import psi_noise_threshold
from streams.drift.reference import ReferenceFeature, categorical_reference, numeric_reference
from streams.summaries.categorical import CategoricalState, CategoricalSummary
from streams.summaries.numeric import NumericState, NumericSummary
from streams.windows import closable, window_starts_ms

#: Pseudo-features for the model's output; reported under ``prediction``.
SCORE = "@score"
PREDICTION = "@prediction"
_OUTPUTS = {SCORE: "score", PREDICTION: "class"}
#: Names of features beyond ``max_features`` remembered for the report.
MAX_UNTRACKED_NAMES = 20


class WindowAcc(TypedDict):
    start_ms: int
    n: int
    numeric: dict[str, NumericState]
    categorical: dict[str, CategoricalState]


class Reference(TypedDict):
    """Warm-up: built from the version's first windows. Profile: from training data
    (``driftline reference build``); then ``start_ms``/``end_ms`` are its build time."""

    kind: Literal["warmup", "profile"]
    start_ms: int
    end_ms: int
    n: int
    features: dict[str, ReferenceFeature]
    source: NotRequired[str]


class VersionState(TypedDict):
    model: str
    model_version: str
    kinds: dict[str, Kind]
    anchors: dict[str, float]
    untracked: list[str]
    reference: Reference | None
    warmup: WindowAcc | None
    windows: dict[str, WindowAcc]
    watermark_ms: int | None
    closed_until_ms: int | None
    late: int
    streaks: dict[str, int]  # windows in a row each judged feature has been flagged


def _reference_info(ref: Reference) -> ReferenceInfo:
    if ref["kind"] == "warmup":
        return ReferenceInfo(
            kind="warmup",
            window_start=_iso(ref["start_ms"]),
            window_end=_iso(ref["end_ms"]),
            n=ref["n"],
            note="warm-up reference: the first events of this version",
        )
    return ReferenceInfo(
        kind="profile",
        n=ref["n"],
        note=f"reference profile from {ref.get('source') or 'training data'}, built "
        f"{_iso(ref['start_ms']).isoformat()}",
    )


def _iso(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class DriftMonitor:
    """Per-feature PSI of event-time tumbling windows against the version's reference.

    >>> from schemas.policy import DriftPolicy
    >>> rng = np.random.default_rng(7)
    >>> m = DriftMonitor(policy=DriftPolicy(window=60, allowed_lateness=0,
    ...                                    min_reference_events=500))
    >>> st = m.initialize("fraud", "v1")
    >>> for minute, shift in [(0, 0.0), (1, 0.0), (2, 1.0), (3, 0.0)]:
    ...     ts = np.full(1000, minute * 60_000)
    ...     cols = {"amount": rng.normal(shift, 1, 1000).tolist(),
    ...             "age": rng.normal(0, 1, 1000).tolist()}
    ...     st = m.update(st, FeatureBatch(ts_ms=ts, columns=cols))
    >>> st, reports = m.close_ready(st)
    >>> [(r.status, r.drifted_features) for r in reports]
    [('ok', []), ('ok', []), ('drift', ['amount'])]
    """

    def __init__(self, *, policy: DriftPolicy) -> None:
        if policy.psi_warn > policy.psi_drift:
            raise ValueError("psi_warn must not exceed psi_drift")
        self.policy = policy
        self.numeric = NumericSummary()
        self.categorical = CategoricalSummary()

    # -- state -------------------------------------------------------------

    @staticmethod
    def initialize(model: str, model_version: str) -> VersionState:
        return {
            "model": model,
            "model_version": model_version,
            "kinds": {},
            "anchors": {},
            "untracked": [],
            "reference": None,
            "warmup": None,
            "windows": {},
            "watermark_ms": None,
            "closed_until_ms": None,
            "late": 0,
            "streaks": {},
        }

    @staticmethod
    def _new_window(start_ms: int) -> WindowAcc:
        return {"start_ms": start_ms, "n": 0, "numeric": {}, "categorical": {}}

    def update(self, state: VersionState, batch: FeatureBatch) -> VersionState:
        """Count a batch into its windows; events of closed windows count as late."""
        if len(batch) == 0:
            return state
        state = {**state, "kinds": dict(state["kinds"]), "windows": dict(state["windows"])}
        self._register_kinds(state, batch)
        starts = window_starts_ms(batch.ts_ms, self.policy.window)
        closed = state["closed_until_ms"]
        late = starts < closed if closed is not None else np.zeros(len(batch), dtype=bool)
        state["late"] += int(late.sum())
        high = int(batch.ts_ms.max())
        wm = state["watermark_ms"]
        state["watermark_ms"] = high if wm is None else max(wm, high)

        numeric = {
            n: numeric_column(batch.columns.get(n, [None] * len(batch)))
            for n, k in state["kinds"].items()
            if k == "numeric"
        }
        categorical = {
            n: categorical_column(batch.columns.get(n, [None] * len(batch)))
            for n, k in state["kinds"].items()
            if k == "categorical"
        }
        edges = self._reference_edges(state)
        on_time = starts[~late]
        for start in np.unique(on_time).tolist():
            mask = (starts == start) & ~late
            whole = bool(mask.all())
            idx = None if whole else np.flatnonzero(mask)
            key = str(start)
            acc = state["windows"].get(key) or self._new_window(start)
            acc = {**acc, "numeric": dict(acc["numeric"]), "categorical": dict(acc["categorical"])}
            acc["n"] += int(mask.sum())
            for name, values in numeric.items():
                part = values if idx is None else values[idx]
                prev = acc["numeric"].get(name) or self.numeric.initialize()
                acc["numeric"][name] = self.numeric.update(
                    prev, part, edges.get(name), anchor=state["anchors"].get(name, 0.0)
                )
            for name, cats in categorical.items():
                cpart = cats if idx is None else [cats[i] for i in idx]
                cprev = acc["categorical"].get(name) or self.categorical.initialize()
                acc["categorical"][name] = self.categorical.update(cprev, cpart)
            state["windows"][key] = acc
        return state

    def _register_kinds(self, state: VersionState, batch: FeatureBatch) -> None:
        kinds = state["kinds"]
        tracked = sum(1 for name in kinds if name not in _OUTPUTS)
        for name, values in batch.columns.items():
            if name in kinds or name in state["untracked"]:
                continue
            kind = infer_kind(values)
            if kind is None:
                continue
            if name not in _OUTPUTS:
                if tracked >= self.policy.max_features:
                    if len(state["untracked"]) < MAX_UNTRACKED_NAMES:
                        state["untracked"] = [*state["untracked"], name]
                    continue
                tracked += 1
            kinds[name] = kind
            if kind == "numeric":
                state["anchors"] = {**state["anchors"], name: anchor_of(values)}

    @staticmethod
    def _reference_edges(state: VersionState) -> dict[str, npt.NDArray[np.float64]]:
        ref = state["reference"]
        if ref is None:
            return {}
        return {
            name: np.asarray(f["bins"], dtype=np.float64)
            for name, f in ref["features"].items()
            if f["kind"] == "numeric"
        }

    # -- closing windows -----------------------------------------------------

    def close_ready(self, state: VersionState) -> tuple[VersionState, list[DriftReport]]:
        """Close every window the watermark has passed; one report per closed window."""
        if state["watermark_ms"] is None:
            return state, []
        due = closable(
            [int(k) for k in state["windows"]],
            watermark_ms=state["watermark_ms"],
            window_ms=self.policy.window,
            allowed_lateness_ms=self.policy.allowed_lateness,
            max_open=self.policy.max_open_windows,
        )
        if not due:
            return state, []
        state = {**state, "windows": dict(state["windows"])}
        reports = []
        for start in due:
            acc = state["windows"].pop(str(start))
            end = start + self.policy.window
            prev = state["closed_until_ms"]
            state["closed_until_ms"] = end if prev is None else max(prev, end)
            late, state["late"] = state["late"], 0
            if state["reference"] is None:
                reports.append(self._absorb_warmup(state, acc, late))
            else:
                reports.append(self._report(state, acc, late))
        return state, reports

    def _merge(self, a: WindowAcc, b: WindowAcc) -> WindowAcc:
        numeric = dict(a["numeric"])
        for name, st in b["numeric"].items():
            numeric[name] = self.numeric.merge(numeric[name], st) if name in numeric else st
        categorical = dict(a["categorical"])
        for name, cst in b["categorical"].items():
            categorical[name] = (
                self.categorical.merge(categorical[name], cst) if name in categorical else cst
            )
        return {
            "start_ms": min(a["start_ms"], b["start_ms"]),
            "n": a["n"] + b["n"],
            "numeric": numeric,
            "categorical": categorical,
        }

    def _absorb_warmup(self, state: VersionState, acc: WindowAcc, late: int) -> DriftReport:
        warm = acc if state["warmup"] is None else self._merge(state["warmup"], acc)
        end = acc["start_ms"] + self.policy.window
        need = self.policy.min_reference_events
        if warm["n"] >= need:
            state["reference"] = self._build_reference(warm, end)
            state["warmup"] = None
            note = (
                f"this window completes the warm-up reference ({warm['n']} events since "
                f"{_iso(warm['start_ms']).isoformat()}); later windows are compared with it"
            )
        else:
            state["warmup"] = warm
            note = (
                f"building the warm-up reference: {warm['n']} of at least {need} events so far; "
                "no drift is judged until it is complete"
            )
        return DriftReport(
            model=state["model"],
            model_version=state["model_version"],
            window_start=_iso(acc["start_ms"]),
            window_end=_iso(end),
            n=acc["n"],
            late=late,
            reference=ReferenceInfo(
                kind="warmup",
                window_start=_iso(warm["start_ms"]),
                window_end=_iso(end),
                n=warm["n"],
                note="this window is part of the reference",
            ),
            features={},
            status="ok",
            notes=[note],
        )

    def _build_reference(self, warm: WindowAcc, end_ms: int) -> Reference:
        p = self.policy
        features: dict[str, ReferenceFeature] = {}
        for name, st in warm["numeric"].items():
            features[name] = numeric_reference(self.numeric, st, bins=p.bins, fine_bins=p.fine_bins)
        for name, cst in warm["categorical"].items():
            features[name] = categorical_reference(cst, top_k=p.top_k)
        return {
            "kind": "warmup",
            "start_ms": warm["start_ms"],
            "end_ms": end_ms,
            "n": warm["n"],
            "features": features,
        }

    def _compare(self, name: str, rf: ReferenceFeature, acc: WindowAcc) -> Comparison:
        if rf["kind"] == "numeric":
            st = acc["numeric"].get(name) or self.numeric.initialize()
            return compare_numeric(self.numeric, rf, st)
        cst = acc["categorical"].get(name) or self.categorical.initialize()
        return compare_categorical(rf, cst)

    def _report(self, state: VersionState, acc: WindowAcc, late: int) -> DriftReport:
        ref = state["reference"]
        assert ref is not None
        p = self.policy
        notes: list[str] = []
        enough = acc["n"] >= p.min_window_events
        if not enough:
            notes.append(
                f"only {acc['n']} events in this window; at least {p.min_window_events} "
                "are needed before a feature is flagged"
            )
        compared: dict[str, tuple[Kind, Comparison]] = {}
        for name in sorted(state["kinds"]):
            rf = ref["features"].get(name)
            if rf is None:
                if name in acc["numeric"] or name in acc["categorical"]:
                    notes.append(f"feature {name!r} is not in the reference and is not judged")
                continue
            compared[name] = (rf["kind"], self._compare(name, rf, acc))
        if state["untracked"]:
            shown = ", ".join(state["untracked"][:5])
            more = "" if len(state["untracked"]) < MAX_UNTRACKED_NAMES else " (and maybe more)"
            notes.append(
                f"{len(state['untracked'])} features beyond max_features={p.max_features} "
                f"are not tracked{more}: {shown}"
            )
        # Bonferroni: noise alone flags any feature in at most false_alarm_rate of windows.
        alpha = p.false_alarm_rate / max(len(compared), 1)
        streaks = dict(state["streaks"])
        results: dict[str, FeatureDrift] = {}
        for name, (kind, c) in compared.items():
            results[name] = self._judge(kind, c, enough, alpha, streaks, name)
        state["streaks"] = streaks
        prediction = {_OUTPUTS[k]: results.pop(k) for k in list(results) if k in _OUTPUTS}
        judged = {**results, **{f"prediction.{k}": v for k, v in prediction.items()}}
        ranked = sorted(
            (n for n, r in judged.items() if r.status != "ok"),
            key=lambda n: -judged[n].metrics["psi"],
        )
        statuses = {r.status for r in judged.values()}
        status: DriftStatus = (
            "drift" if "drift" in statuses else "warn" if "warn" in statuses else "ok"
        )
        return DriftReport(
            model=state["model"],
            model_version=state["model_version"],
            window_start=_iso(acc["start_ms"]),
            window_end=_iso(acc["start_ms"] + p.window),
            n=acc["n"],
            late=late,
            reference=_reference_info(ref),
            features=results,
            prediction=prediction,
            status=status,
            drifted_features=ranked,
            thresholds={
                "psi_warn": p.psi_warn,
                "psi_drift": p.psi_drift,
                "false_alarm_rate": p.false_alarm_rate,
                "consecutive": p.consecutive,
            },
            notes=notes,
        )

    def _judge(
        self,
        kind: Kind,
        c: Comparison,
        enough: bool,
        alpha: float,
        streaks: dict[str, int],
        name: str,
    ) -> FeatureDrift:
        """Flag when PSI beats both noise and the floor; drift when it holds or is large."""
        p = self.policy
        noise = psi_noise_threshold(c.reference_n, c.n, bins=c.psi_bins, alpha=alpha)
        status: DriftStatus = "ok"
        reason = ""
        if enough:
            flagged = c.psi > noise and c.psi >= p.psi_warn
            streaks[name] = streaks.get(name, 0) + 1 if flagged else 0
            if flagged:
                why = (
                    f"PSI {c.psi:.3f} is above noise ({noise:.4f} for {c.n} values at a "
                    f"false-alarm rate of {p.false_alarm_rate:g} per window) and the "
                    f"{p.psi_warn:g} floor"
                )
                run = streaks[name]
                if c.psi >= p.psi_drift:
                    status, when = "drift", f"; at least {p.psi_drift:g}, drift at once"
                elif run >= p.consecutive:
                    status, when = "drift", f"; flagged {run} windows in a row"
                else:
                    left = p.consecutive - run
                    status = "warn"
                    when = f"; drift if it holds {left} more window{'s' if left > 1 else ''}"
                reason = f"{why}{when}; {c.move}"
        return FeatureDrift(
            kind=kind,
            n=c.n,
            missing=c.missing,
            metrics=c.metrics,
            threshold=round(noise, 6) if noise != float("inf") else None,
            streak=streaks.get(name, 0),
            status=status,
            drifted=status == "drift",
            reason=reason,
        )
