"""Windowed drift of one model version: a fold over a plain, serialisable state.

``DriftMonitor`` holds configuration only. Its state (``VersionState``) is a
JSON-able dict that the drift agent keeps in a Faust table, one per
``model@version``. Bounds on that state, all from the policy:

* features tracked: ``max_features`` (the names of up to ``MAX_UNTRACKED_NAMES``
  more are kept in ``untracked`` for the report);
* open windows: ``max_open_windows`` (the oldest closes early beyond that).
  Windows are counted in panes (``streams.windows``): tumbling windows are
  their own panes; hopping windows (``hop``) keep panes of ``hop``, at most
  ``max_open_windows + window / hop - 1`` of them, and each window is the
  merge of its ``window / hop`` panes when it closes. The bounds below are
  per pane;
* per numeric feature and window: ``bins + 1`` counts, or a log-bucket sketch
  (at most 2,048 buckets) while the reference is still being built;
* per categorical feature and window: ``CategoricalSummary.MAX_CATEGORIES`` counts;
* multivariate signal, per window: three numbers (count, sum and sum of squares
  of the events' reconstruction errors, about 50 bytes as JSON); while the
  warm-up reference is being built, instead, two halves of moments of
  ``d <= multivariate_max_features`` features, ``2 + 5d + d(d+1)`` numbers
  (1,082 for d = 30, about 20 KB as JSON) per open window and in ``warmup``.

The reference is the first window(s) of the version, until at least
``min_reference_events`` events have been seen (a *warm-up* reference; reports
say so). Numeric bins are the reference's quantiles (``bins`` of them);
categorical bins are its ``top_k`` categories plus "other". Its multivariate
part (``streams.drift.multivariate``) is a PCA of the first
``multivariate_max_features`` numeric features by name, chosen when the first
warm-up batch with two of them arrives (features first seen later are not in
it), fitted on the warm-up's even events and measured on its odd ones:
``3d + kd + 4`` numbers for ``k < d`` components, at most 964 (about 19 KB as
JSON) for d = 30; 6 KB for the 20 numeric features of the simulated traffic.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, NotRequired, TypedDict, cast

import numpy as np
import numpy.typing as npt

from schemas.policy import DriftPolicy, FeatureThresholds, format_duration_ms
from schemas.reference import ReferenceProfile
from schemas.reports import (
    DriftReport,
    DriftStatus,
    FeatureDrift,
    MultivariateDrift,
    ReferenceInfo,
)
from streams.batch import (
    Categories,
    FeatureBatch,
    Kind,
    anchor_of,
    categorical_column,
    infer_kind,
    numeric_column,
    numeric_matrix,
    take,
)
from streams.drift import multivariate as mv
from streams.drift.compare import (
    Comparison,
    References,
    compare_categorical_many,
    compare_numeric_many,
    prepare,
)
from streams.drift.psi import psi_noise_threshold
from streams.drift.reference import ReferenceFeature, categorical_reference, numeric_reference
from streams.summaries.categorical import CategoricalState, CategoricalSummary
from streams.summaries.numeric import NumericState, NumericSummary
from streams.windows import hopping_closable, window_starts_ms

#: Pseudo-features for the model's output; reported under ``prediction``.
SCORE = "@score"
PREDICTION = "@prediction"
_OUTPUTS = {SCORE: "score", PREDICTION: "class"}


def policy_name(name: str) -> str:
    """The name a feature has in the report and in the policy's ``drift.features``:
    the outputs are ``prediction.score`` and ``prediction.class``."""
    return f"prediction.{_OUTPUTS[name]}" if name in _OUTPUTS else name


#: Names of features beyond ``max_features`` remembered for the report.
MAX_UNTRACKED_NAMES = 20
#: The multivariate signal's name in ``drifted_features``, and its key in ``streaks``.
MULTIVARIATE = "multivariate.reconstruction_error"
_MV_STREAK = "@multivariate"
_Cats = list[str | None] | Categories


class WindowAcc(TypedDict):
    start_ms: int
    n: int
    numeric: dict[str, NumericState]
    categorical: dict[str, CategoricalState]
    # [n, sum, sum of squares] of reconstruction errors; None: some events of the
    # window were counted before the reference was complete, so it is not judged.
    mv: NotRequired[mv.ErrorSums | None]
    mv_halves: NotRequired[mv.Halves]  # warm-up only: moments of halves A and B


class Reference(TypedDict):
    """Warm-up: built from the version's first windows. Profile: from training data
    (``driftline reference build``); then ``start_ms``/``end_ms`` are its build time."""

    kind: Literal["warmup", "profile"]
    start_ms: int
    end_ms: int
    n: int
    features: dict[str, ReferenceFeature]
    source: NotRequired[str]
    # None: not enough numeric features; absent: built before the signal existed.
    multivariate: NotRequired[mv.PcaReference | None]


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
    mv_names: NotRequired[list[str]]  # warm-up only: the multivariate signal's features
    # While the reference changes: the one windows before reference_from_ms keep.
    previous_reference: NotRequired[Reference | None]
    reference_from_ms: NotRequired[int | None]
    # Messages in a row wholly beyond the future bound (streams.windows.bound_future),
    # kept by the caller that applies it.
    ahead: NotRequired[list[int] | None]


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


def reference_from_profile(profile: ReferenceProfile) -> Reference:
    """The reference a published ``ReferenceProfile`` stands for, multivariate part included."""
    at = int(profile.created_at.timestamp() * 1000)
    return {
        "kind": "profile",
        "start_ms": at,
        "end_ms": at,
        "n": profile.n,
        "source": profile.source,
        "features": {
            k: cast(ReferenceFeature, v.model_dump()) for k, v in profile.features.items()
        },
        "multivariate": (
            cast(mv.PcaReference, profile.multivariate.model_dump())
            if profile.multivariate is not None
            else None
        ),
    }


class DriftMonitor:
    """Per-feature PSI of event-time windows (tumbling, or hopping with ``hop``) against
    the version's reference, and the PCA reconstruction error of the numeric features
    together (``multivariate``).

    With hopping windows, ``consecutive`` counts windows one hop apart, which
    overlap: set it to ``window / hop + 1`` for a condition to hold over two
    disjoint windows; ``false_alarm_rate`` stays per window, and there are
    ``window / hop`` times as many windows.

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
        if policy.psi_warn > policy.psi_drift or any(
            t.psi_warn > t.psi_drift for t in map(policy.for_feature, policy.features)
        ):
            raise ValueError("psi_warn must not exceed psi_drift")
        self.policy = policy
        # Windows are counted in panes of ``hop`` (``window`` when tumbling): the
        # state keeps at most max_open_windows windows' worth of them.
        self.max_panes = policy.max_open_windows + policy.window // policy.pane - 1
        self.numeric = NumericSummary()
        self.categorical = CategoricalSummary()
        # A cache, not state: bin edges of the last two references (``_edges_of``).
        self._edges: list[tuple[Reference, dict[str, npt.NDArray[np.float64]]]] = []
        # ... and their features as arrays, for the report (``_references``).
        self._prepared: list[tuple[Reference, References]] = []

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
        starts = window_starts_ms(batch.ts_ms, self.policy.pane)
        closed = state["closed_until_ms"]
        late = starts < closed if closed is not None else np.zeros(len(batch), dtype=bool)
        state["late"] += int(late.sum())
        high = int(batch.ts_ms.max())
        wm = state["watermark_ms"]
        state["watermark_ms"] = high if wm is None else max(wm, high)

        numeric_names = [n for n, k in state["kinds"].items() if k == "numeric"]
        matrix = numeric_matrix([batch.columns.get(n) for n in numeric_names], len(batch))
        numeric = dict(zip(numeric_names, matrix, strict=True))
        categorical = {
            n: categorical_column(batch.columns.get(n, [None] * len(batch)))
            for n, k in state["kinds"].items()
            if k == "categorical"
        }
        edges_now = self._edges_of(state["reference"])
        cut = state.get("reference_from_ms")
        previous = state.get("previous_reference")
        edges_before = self._edges_of(previous) if cut is not None and previous else {}
        errors, rows = self._multivariate_input(state, batch, numeric)
        shift = [state["anchors"].get(name, 0.0) for name in state.get("mv_names", [])]
        on_time = starts[~late]
        for start in np.unique(on_time).tolist():
            mask = (starts == start) & ~late
            whole = bool(mask.all())
            idx = None if whole else np.flatnonzero(mask)
            key = str(start)
            acc = state["windows"].get(key) or self._new_window(start)
            acc = {**acc, "numeric": dict(acc["numeric"]), "categorical": dict(acc["categorical"])}
            # A window opened before the reference changed is counted and judged on
            # the previous one (its bins); its multivariate signal is not judged.
            before = cut is not None and start < cut
            edges = edges_before if before else edges_now
            if before:
                acc["mv"] = None
            # (a window counted partly before its reference existed keeps mv None)
            elif errors is not None and "mv_halves" not in acc and acc.get("mv", ()) is not None:
                acc["mv"] = mv.add_errors(acc.get("mv"), errors if idx is None else errors[idx])
            elif rows is not None:
                halves = acc.get("mv_halves") or mv.empty_halves(shift)
                part_rows = rows if idx is None else rows[idx]
                acc["mv_halves"] = mv.add_events(halves, part_rows, offset=acc["n"])
            acc["n"] += int(mask.sum())
            if numeric_names:
                updated = self.numeric.update_many(
                    [acc["numeric"].get(n) or self.numeric.initialize() for n in numeric_names],
                    matrix if idx is None else matrix[:, idx],
                    [edges.get(n) for n in numeric_names],
                    [state["anchors"].get(n, 0.0) for n in numeric_names],
                )
                acc["numeric"].update(zip(numeric_names, updated, strict=True))
            for name, cats in categorical.items():
                cpart = cats if idx is None else cast(_Cats, take(cats, idx))
                cprev = acc["categorical"].get(name) or self.categorical.initialize()
                acc["categorical"][name] = self.categorical.update(cprev, cpart)
            state["windows"][key] = acc
        return state

    def _multivariate_input(
        self,
        state: VersionState,
        batch: FeatureBatch,
        numeric: dict[str, npt.NDArray[np.float64]],
    ) -> tuple[npt.NDArray[np.float64] | None, npt.NDArray[np.float64] | None]:
        """``(errors, None)``: the batch's per-event reconstruction errors, once the
        reference has a PCA; ``(None, rows)``: the rows of the chosen features, for
        the warm-up's moments; ``(None, None)``: nothing to count."""
        if not self.policy.multivariate:
            return None, None
        ref = state["reference"]
        if ref is not None:
            pca = ref.get("multivariate")
            if pca is None:
                return None, None
            return mv.errors(pca, self._rows(pca["names"], batch, numeric)), None
        names = state.get("mv_names")
        if names is None:
            ignored = self.policy.ignored()
            names = mv.choose_features(
                [
                    n
                    for n, k in state["kinds"].items()
                    if k == "numeric" and n not in _OUTPUTS and n not in ignored
                ],
                self.policy.multivariate_max_features,
            )
            if len(names) < 2:
                return None, None
            state["mv_names"] = names
        return None, self._rows(names, batch, numeric)

    @staticmethod
    def _rows(
        names: list[str], batch: FeatureBatch, numeric: dict[str, npt.NDArray[np.float64]]
    ) -> npt.NDArray[np.float64]:
        n = len(batch)
        columns = [
            numeric[name]
            if name in numeric
            else numeric_column(batch.columns[name])
            if name in batch.columns
            else np.full(n, np.nan)
            for name in names
        ]
        # events x features, as the transpose of features x events: one copy, and
        # each feature's values stay together in memory (as ``mv.errors`` reads them)
        return np.stack(columns).T if columns else np.empty((n, 0))

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

    def _edges_of(self, ref: Reference | None) -> dict[str, npt.NDArray[np.float64]]:
        """The reference's numeric bin edges as arrays (read-only), kept for the last
        two references seen: the same reference object comes with every batch."""
        if ref is None:
            return {}
        for seen, edges in self._edges:
            if seen is ref:
                return edges
        edges = {
            name: np.array(f["bins"], dtype=np.float64)
            for name, f in ref["features"].items()
            if f["kind"] == "numeric"
        }
        for array in edges.values():
            array.flags.writeable = False  # shared by every batch until the reference changes
        self._edges = [(ref, edges), *self._edges[:1]]
        return edges

    # -- closing windows -----------------------------------------------------

    def close_ready(self, state: VersionState) -> tuple[VersionState, list[DriftReport]]:
        """Close every window the watermark has passed; one report per closed window."""
        if state["watermark_ms"] is None:
            return state, []
        p = self.policy
        due = hopping_closable(
            [int(k) for k in state["windows"]],
            closed_until_ms=state["closed_until_ms"],
            watermark_ms=state["watermark_ms"],
            window_ms=p.window,
            hop_ms=p.pane,
            allowed_lateness_ms=p.allowed_lateness,
            max_panes=self.max_panes,
        )
        if not due:
            return state, []
        state = {**state, "windows": dict(state["windows"])}
        reports = []
        for start in due:
            end = start + p.window
            cut = state.get("reference_from_ms")
            straddles = cut is not None and start < cut < end
            acc = self._window(state, start, cut if straddles else None)
            last = state["windows"].pop(str(start), None)  # its last window closes
            prev = state["closed_until_ms"]
            state["closed_until_ms"] = end if prev is None else max(prev, end)
            late, state["late"] = state["late"], 0
            if state["reference"] is None:
                reports.append(self._absorb_warmup(state, acc, last, late))
            elif straddles:
                reports.append(self._report(state, acc, late, judge=False, since_ms=cut))
            elif self._before_switch(state, start):
                previous = state.get("previous_reference")
                if previous is None:  # opened during the warm-up
                    reports.append(self._report(state, acc, late, judge=False))
                else:
                    view: VersionState = {**state, "reference": previous}
                    reports.append(self._report(view, acc, late))
                    state["streaks"] = view["streaks"]
            else:
                reports.append(self._report(state, acc, late))
        cut = state.get("reference_from_ms")
        if cut is not None and not any(int(k) < cut for k in state["windows"]):
            state["previous_reference"], state["reference_from_ms"] = None, None
        return state, reports

    def _window(self, state: VersionState, start: int, since_ms: int | None) -> WindowAcc:
        """The window starting at ``start``: its pane when tumbling, else the merge of
        its panes (from ``since_ms`` on, if given)."""
        p = self.policy
        first = start if since_ms is None else since_ms
        panes = [
            state["windows"][key]
            for key in map(str, range(first, start + p.window, p.pane))
            if key in state["windows"]
        ]
        if len(panes) == 1 and panes[0]["start_ms"] == start:
            return panes[0]  # tumbling windows are their panes
        acc = self._new_window(start)
        for pane in panes:  # not their warm-up moments: the warm-up merges the panes
            acc = self._merge(acc, pane, moments=False)
        acc["start_ms"] = start
        if any("mv" in pane or "mv_halves" in pane for pane in panes):
            sums = [pane.get("mv") for pane in panes]  # None: not judged
            acc["mv"] = None if None in sums else mv.sum_errors(cast(list[mv.ErrorSums], sums))
        return acc

    def _before_switch(self, state: VersionState, start: int) -> bool:
        """Whether the window starting at ``start`` ends before the reference changed."""
        cut = state.get("reference_from_ms")
        return cut is not None and start + self.policy.window <= cut

    def switch_reference(
        self, state: VersionState, reference: Reference, previous: Reference | None
    ) -> VersionState:
        """Judge against ``reference`` from the next window on.

        Windows already open were counted on ``previous``'s bins: they keep it
        until they close (``previous_reference`` and ``reference_from_ms``, the
        first window start that uses the new one). Windows opened during the
        warm-up (``previous`` None) were counted without any bins: they are
        reported but not judged (the sketch cannot place values that sit exactly
        on a profile's bin edges, e.g. counts of a discrete feature). Without
        open windows the switch is immediate.
        """
        state = {**state, "reference": reference}
        open_starts = [int(k) for k in state["windows"]]
        if not open_starts:
            state["previous_reference"], state["reference_from_ms"] = None, None
            return state
        state["previous_reference"] = previous
        state["reference_from_ms"] = max(open_starts) + self.policy.pane
        return state

    def _merge(self, a: WindowAcc, b: WindowAcc, *, moments: bool = True) -> WindowAcc:
        """``a`` and ``b`` together; without ``moments``, no warm-up moments (``mv_halves``)."""
        numeric = dict(a["numeric"])
        for name, st in b["numeric"].items():
            numeric[name] = self.numeric.merge(numeric[name], st) if name in numeric else st
        categorical = dict(a["categorical"])
        for name, cst in b["categorical"].items():
            categorical[name] = (
                self.categorical.merge(categorical[name], cst) if name in categorical else cst
            )
        merged: WindowAcc = {
            "start_ms": min(a["start_ms"], b["start_ms"]),
            "n": a["n"] + b["n"],
            "numeric": numeric,
            "categorical": categorical,
        }
        if not moments:
            return merged
        ha, hb = a.get("mv_halves"), b.get("mv_halves")
        halves = ha if hb is None else hb if ha is None else mv.merge_halves(ha, hb)
        if halves is not None:
            merged["mv_halves"] = halves
        return merged

    def _absorb_warmup(
        self, state: VersionState, acc: WindowAcc, pane: WindowAcc | None, late: int
    ) -> DriftReport:
        """Report the window ``acc`` of the warm-up and add its first ``pane`` (the one
        it retires; the window itself when tumbling) to the warm-up reference."""
        p = self.policy
        end = acc["start_ms"] + p.window
        pane_end = acc["start_ms"] + p.pane  # the warm-up's end once ``pane`` is in
        warm = state["warmup"]
        if pane is not None:
            warm = pane if warm is None else self._merge(warm, pane)
        if warm is None:  # hopping: no events in the panes the warm-up has seen yet
            warm = self._new_window(acc["start_ms"])
        need = p.min_reference_events
        part = (
            "this window is part of the reference"
            if p.pane == p.window
            else f"the first {format_duration_ms(p.pane)} of this window are part of the reference"
        )
        notes = []
        if warm["n"] >= need:
            ref = self._build_reference(warm, pane_end, state.pop("mv_names", None))
            state["reference"] = ref
            state["warmup"] = None
            unjudged = self._drop_halves(state, after_ms=acc["start_ms"])
            notes.append(
                f"this window completes the warm-up reference ({warm['n']} events since "
                f"{_iso(warm['start_ms']).isoformat()}); later windows are compared with it"
            )
            pca = ref.get("multivariate")
            if pca is not None:
                notes.append(
                    f"multivariate signal: {len(pca['components'])} principal components of "
                    f"{len(pca['names'])} standardised numeric features explain "
                    f"{pca['explained']:.0%} of their variance; their reconstruction error on "
                    f"{pca['n_baseline']} held-out warm-up events is {pca['baseline']:.4f}"
                )
                if unjudged:
                    starts = ", ".join(_iso(ms).isoformat() for ms in unjudged)
                    many = len(unjudged) > 1
                    notes.append(
                        f"the window{'s' if many else ''} starting {starts} will not be judged "
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
            window_start=_iso(acc["start_ms"]),
            window_end=_iso(end),
            n=acc["n"],
            late=late,
            reference=ReferenceInfo(
                kind="warmup",
                window_start=_iso(warm["start_ms"]),
                window_end=_iso(pane_end),
                n=warm["n"],
                note=part,
            ),
            features={},
            status="ok",
            notes=notes,
        )

    def _drop_halves(self, state: VersionState, *, after_ms: int) -> list[int]:
        """Open windows drop their moments once the reference is built, and are not
        judged by the multivariate signal: how many of their events were counted
        before the reference was complete depends on how events were batched, and
        reports must not (for events in time order, *whether* any was depends on
        event times only: the window right after the warm-up, mostly).

        Returns the starts of those windows (the windows after ``after_ms`` that
        hold one of those panes, when hopping)."""
        p = self.policy
        dropped: set[int] = set()
        for key, acc in state["windows"].items():
            if "mv_halves" in acc:
                kept = cast(WindowAcc, {k: v for k, v in acc.items() if k != "mv_halves"})
                kept["mv"] = None
                state["windows"][key] = kept
                first = max(acc["start_ms"] - p.window + p.pane, after_ms + p.pane)
                dropped.update(range(first, acc["start_ms"] + 1, p.pane))
        return sorted(dropped)

    def _build_reference(
        self, warm: WindowAcc, end_ms: int, mv_names: list[str] | None
    ) -> Reference:
        p = self.policy
        features: dict[str, ReferenceFeature] = {}
        for name, st in warm["numeric"].items():
            features[name] = numeric_reference(self.numeric, st, bins=p.bins, fine_bins=p.fine_bins)
        for name, cst in warm["categorical"].items():
            features[name] = categorical_reference(cst, top_k=p.top_k)
        halves = warm.get("mv_halves")
        pca = (
            mv.fit(mv_names, halves, variance=p.multivariate_variance)
            if p.multivariate and mv_names and halves
            else None
        )
        return {
            "kind": "warmup",
            "start_ms": warm["start_ms"],
            "end_ms": end_ms,
            "n": warm["n"],
            "features": features,
            "multivariate": pca,
        }

    def _references(self, ref: Reference) -> References:
        """The reference's features prepared for comparisons, kept for the last two
        references (as ``_edges_of`` keeps their edges)."""
        for seen, prepared in self._prepared:
            if seen is ref:
                return prepared
        prepared = prepare(ref["features"])
        self._prepared = [(ref, prepared), *self._prepared[:1]]
        return prepared

    def _compare(self, ref: Reference, names: list[str], acc: WindowAcc) -> dict[str, Comparison]:
        """The window's features ``names`` (all in the reference) against the reference,
        all at once."""
        refs = self._references(ref)
        empty = self.numeric.initialize()
        nothing = self.categorical.initialize()
        numeric = compare_numeric_many(
            self.numeric, refs.numeric, [acc["numeric"].get(n) or empty for n in refs.numeric.names]
        )
        categorical = compare_categorical_many(
            refs.categorical, [acc["categorical"].get(n) or nothing for n in refs.categorical.names]
        )
        out = {
            **dict(zip(refs.numeric.names, numeric, strict=True)),
            **dict(zip(refs.categorical.names, categorical, strict=True)),
        }
        return {name: out[name] for name in names}

    def _report(
        self,
        state: VersionState,
        acc: WindowAcc,
        late: int,
        *,
        judge: bool = True,
        since_ms: int | None = None,
    ) -> DriftReport:
        """``since_ms``: a hopping window that spans a change of reference; only its
        panes from then on (counted on the new reference's bins) are in ``acc``."""
        ref = state["reference"]
        assert ref is not None
        p = self.policy
        notes: list[str] = []
        enough = judge and acc["n"] >= p.min_window_events
        if since_ms is not None:
            notes.append(
                "the reference changed during this window: only its events from "
                f"{_iso(since_ms).isoformat()} on, counted on the new reference's bins, are "
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
            for name, c in self._compare(ref, names, acc).items()
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
            notes.extend(self._multivariate_notes(state, ref, partial))
        if pca is not None:
            notes.extend(self._ignored_in_multivariate(pca, ref))
        # Bonferroni: noise alone flags any judged feature (or the multivariate signal)
        # in at most false_alarm_rate of windows. Ignored features are not tests.
        settings = {name: p.for_feature(policy_name(name)) for name in compared}
        tests = sum(not t.ignore for t in settings.values()) + (sums is not None)
        alpha = p.false_alarm_rate / max(tests, 1)
        streaks = dict(state["streaks"])
        results: dict[str, FeatureDrift] = {}
        for name, (kind, c) in compared.items():
            results[name] = self._judge(kind, c, enough, alpha, streaks, name, settings[name])
        multivariate = (
            self._judge_multivariate(pca, sums, alpha, streaks)
            if pca is not None and sums is not None
            else None
        )
        state["streaks"] = streaks
        prediction = {_OUTPUTS[k]: results.pop(k) for k in list(results) if k in _OUTPUTS}
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
            window_start=_iso(acc["start_ms"]),
            window_end=_iso(acc["start_ms"] + p.window),
            n=acc["n"],
            late=late,
            reference=_reference_info(ref),
            features=results,
            prediction=prediction,
            multivariate=multivariate,
            status=status,
            drifted_features=ranked,
            thresholds=thresholds,
            notes=notes,
        )

    def _ignored_in_multivariate(self, pca: mv.PcaReference, ref: Reference) -> list[str]:
        """Ignored features a reference built before they were ignored still has."""
        kept = [n for n in pca["names"] if n in self.policy.ignored()]
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

    @staticmethod
    def _multivariate_notes(state: VersionState, ref: Reference, partial: bool) -> list[str]:
        """Why a window has no multivariate result, when it might have had one."""
        if "multivariate" not in ref:
            numeric = [n for n, k in state["kinds"].items() if k == "numeric" and n not in _OUTPUTS]
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
        if ref["multivariate"] is not None and partial and ref["kind"] == "profile":
            # (after a warm-up, the report that completed it said so)
            return [
                "the multivariate signal is not judged in this window: some of its events were "
                "counted before the reference profile arrived"
            ]
        return []

    def _judge_multivariate(
        self, pca: mv.PcaReference, sums: mv.ErrorSums, alpha: float, streaks: dict[str, int]
    ) -> MultivariateDrift:
        """Flag when the mean error beats noise and the relative floor; drift when it
        holds ``consecutive`` windows or rises ``multivariate_drift`` above the baseline.

        The floor plays the part ``psi_warn`` plays for a feature: a large window
        makes a tiny rise significant, not important.
        """
        p = self.policy
        t = mv.compare_errors(pca, sums, alpha=alpha)
        status: DriftStatus = "ok"
        reason = ""
        if t.n >= p.min_window_events:
            flagged = t.beats_noise() and t.relative_change >= p.multivariate_warn
            streaks[_MV_STREAK] = streaks.get(_MV_STREAK, 0) + 1 if flagged else 0
            if flagged:
                noise = (
                    f"noise ({t.noise:.4f} for {t.n} events at a false-alarm rate of "
                    f"{p.false_alarm_rate:g} per window; z = {t.z:.1f})"
                    if t.noise is not None and t.z is not None
                    else "noise (every event of the window has the same error)"
                )
                why = (
                    f"the reconstruction error of {len(pca['names'])} standardised numeric "
                    f"features from {len(pca['components'])} principal components is "
                    f"{t.error:.4f}, {t.relative_change:.0%} above its baseline "
                    f"{t.baseline:.4f}: above {noise} and the {p.multivariate_warn:.0%} floor"
                )
                status, when = self._hysteresis(
                    streaks[_MV_STREAK], t.relative_change >= p.multivariate_drift,
                    f"at least {p.multivariate_drift:.0%} above", p.consecutive)
                reason = (
                    f"{why}{when}; the features no longer vary together as in the reference "
                    "(changed correlations, or values off the reference's main directions)"
                )
        return MultivariateDrift(
            n=t.n,
            reconstruction_error=t.error,
            baseline=t.baseline,
            relative_change=t.relative_change,
            z=t.z,
            threshold=round(t.noise, 6) if t.noise is not None else None,
            components=len(pca["components"]),
            features_used=list(pca["names"]),
            streak=streaks.get(_MV_STREAK, 0),
            status=status,
            drifted=status == "drift",
            reason=reason,
        )

    @staticmethod
    def _hysteresis(
        run: int, large: bool, how_large: str, consecutive: int
    ) -> tuple[DriftStatus, str]:
        """A flagged signal is drift when large or flagged ``consecutive`` windows running,
        warn before that; with the words that say which."""
        if large:
            return "drift", f"; {how_large}, drift at once"
        if run >= consecutive:
            return "drift", f"; flagged {run} windows in a row"
        left = consecutive - run
        return "warn", f"; drift if it holds {left} more window{'s' if left > 1 else ''}"

    def _judge(
        self,
        kind: Kind,
        c: Comparison,
        enough: bool,
        alpha: float,
        streaks: dict[str, int],
        name: str,
        t: FeatureThresholds,
    ) -> FeatureDrift:
        """Flag when PSI beats both noise and the floor; drift when it holds or is large.

        ``t``: the feature's own settings (``drift.features``) over the section's. An
        ignored feature is reported with its metrics and never flagged."""
        if t.ignore:
            streaks.pop(name, None)
            return FeatureDrift(
                kind=kind, n=c.n, missing=c.missing, metrics=c.metrics,
                status="ok", drifted=False, ignored=True,
            )
        p = self.policy
        noise = psi_noise_threshold(c.reference_n, c.n, bins=c.psi_bins, alpha=alpha)
        status: DriftStatus = "ok"
        reason = ""
        if enough:
            flagged = c.psi > noise and c.psi >= t.psi_warn
            streaks[name] = streaks.get(name, 0) + 1 if flagged else 0
            if flagged:
                why = (
                    f"PSI {c.psi:.3f} is above noise ({noise:.4f} for {c.n} values at a "
                    f"false-alarm rate of {p.false_alarm_rate:g} per window) and the "
                    f"{t.psi_warn:g} floor"
                )
                status, when = self._hysteresis(
                    streaks[name], c.psi >= t.psi_drift, f"at least {t.psi_drift:g}",
                    t.consecutive)
                reason = f"{why}{when}; {c.move}"
        return FeatureDrift(
            kind=kind,
            n=c.n,
            missing=c.missing,
            metrics=c.metrics,
            threshold=round(noise, 6) if noise != float("inf") else None,
            thresholds={
                "psi_warn": t.psi_warn,
                "psi_drift": t.psi_drift,
                "consecutive": t.consecutive,
            },
            streak=streaks.get(name, 0),
            status=status,
            drifted=status == "drift",
            reason=reason,
        )
