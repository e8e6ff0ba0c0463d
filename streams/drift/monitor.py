"""Windowed drift of one model version: a fold over a plain, serialisable state.

``DriftMonitor`` holds configuration (and caches) only; the state it folds over
is a ``VersionState`` (``streams.drift.state``, which says what bounds it), kept
by the drift agent in a Faust table, one per ``model@version``:

* ``initialize(model, version)``: the state before the first event;
* ``update(state, batch)``: count a batch of columns into its windows (here);
* ``close_ready(state)``: close the windows the watermark has passed, one report
  each: a window from its panes (``streams.drift.panes``), the warm-up reference
  while it is built (``streams.drift.warmup``), the judgement
  (``streams.drift.judge``) and the report with its notes
  (``streams.drift.report_text``);
* which reference judges a window when a published profile replaces it:
  ``streams.drift.reference_switch``.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import numpy.typing as npt

from schemas.policy import DriftPolicy
from schemas.reports import DriftReport
from schemas.windows import CountWindow
from streams.batch import (
    Categories,
    FeatureBatch,
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
from streams.drift.panes import Summaries, window
from streams.drift.reference_switch import judged_by_previous
from streams.drift.report_text import window_report
from streams.drift.state import (
    MAX_UNTRACKED_NAMES,
    OUTPUTS,
    Cats,
    Reference,
    VersionState,
    WindowAcc,
    initialize,
    iso,
    new_window,
)
from streams.drift.warmup import absorb_warmup
from streams.windows import scheme


def _category_list(
    batch: FeatureBatch, categorical: dict[str, Cats], name: str
) -> list[str | None]:
    """A categorical feature's values in the batch as strings (None: no value)."""
    column = categorical.get(name)
    if column is None:
        column = categorical_column(batch.columns.get(name, [None] * len(batch)))
    return column.values() if isinstance(column, Categories) else list(column)


def _encoded(
    frequencies: dict[str, float], batch: FeatureBatch, categorical: dict[str, Cats], name: str
) -> npt.NDArray[np.float64]:
    """A categorical feature's values encoded as their reference frequencies; codes
    (Arrow dictionaries) through a lookup table of the dictionary's names."""
    column = categorical.get(name)
    if isinstance(column, Categories):
        lookup = np.array([*(frequencies.get(c, 0.0) for c in column.names), 0.0])
        out: npt.NDArray[np.float64] = lookup[column.codes]  # code -1 reads the last
        return out
    return mv.encode(frequencies, _category_list(batch, categorical, name))


def _take_measured(m: mv.Measured, idx: npt.NDArray[np.intp]) -> mv.Measured:
    return mv.Measured(
        errors=m.errors[idx], farthest=m.farthest[idx], where=m.where[idx], beyond=m.beyond[idx]
    )


class DriftMonitor:
    """Per-feature PSI of windows (event-time durations, tumbling or hopping with
    ``hop``; calendar periods; or every N events: ``schemas.windows``) against
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
        # Windows are counted in panes of ``hop`` (``window`` when tumbling; a calendar
        # period; a chunk of ``events``): the state keeps at most max_open_windows
        # windows' worth of them.
        self.windows = scheme(policy.window, policy.hop)
        #: count windows: events per window (their panes are chunk indices), else None
        self.count = policy.window.events if isinstance(policy.window, CountWindow) else None
        self.max_panes = policy.max_open_windows + self.windows.panes_per_window - 1
        self.summaries = Summaries()
        self.numeric, self.categorical = self.summaries.numeric, self.summaries.categorical
        # A cache, not state: bin edges of the last two references (``_edges_of``).
        self._edges: list[tuple[Reference, dict[str, npt.NDArray[np.float64]]]] = []
        # ... and their features as arrays, for the report (``_references``).
        self._prepared: list[tuple[Reference, References]] = []

    # -- state -------------------------------------------------------------

    initialize = staticmethod(initialize)

    def update(self, state: VersionState, batch: FeatureBatch) -> VersionState:
        """Count a batch into its windows; events of closed windows count as late."""
        if len(batch) == 0:
            return state
        state = {**state, "kinds": dict(state["kinds"]), "windows": dict(state["windows"])}
        opened = len(state["windows"])
        self._register_kinds(state, batch)
        if self.count is None:
            starts = self.windows.pane_starts(batch.ts_ms)
        else:  # the chunk of each event, by its position in the version's stream
            counted = state.get("counted", 0)
            starts = (counted + np.arange(len(batch), dtype=np.int64)) // self.count
            state["counted"] = counted + len(batch)
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
        errors, rows = self._multivariate_input(state, batch, numeric, categorical)
        mv_names = state.get("mv_names", [])
        columns = mv.SLOTS * len(state.get("mv_categorical", {}))
        shift = [state["anchors"].get(name, 0.0) for name in mv_names] + [0.0] * columns
        limits_by = state.get("mv_limits")
        limits = (
            [limits_by.get(name) for name in mv_names] + [None] * columns
            if limits_by is not None
            else None
        )
        on_time = starts[~late]
        for start in np.unique(on_time).tolist():
            mask = (starts == start) & ~late
            whole = bool(mask.all())
            idx = None if whole else np.flatnonzero(mask)
            key = str(start)
            acc = state["windows"].get(key) or new_window(start)
            acc = {**acc, "numeric": dict(acc["numeric"]), "categorical": dict(acc["categorical"])}
            # A window opened before the reference changed is counted and judged on
            # the previous one (its bins); its multivariate signal is not judged.
            before = cut is not None and start < cut
            edges = edges_before if before else edges_now
            if before:
                acc["mv"] = None
            # (a window counted partly before its reference existed keeps mv None)
            elif errors is not None and "mv_halves" not in acc and acc.get("mv", ()) is not None:
                acc["mv"] = mv.add_errors(
                    acc.get("mv"), errors if idx is None else _take_measured(errors, idx)
                )
            elif rows is not None:
                halves = acc.get("mv_halves") or mv.empty_halves(
                    shift, limits, categorical=len(state.get("mv_categorical", {}))
                )
                part_rows = rows if idx is None else rows[idx]
                acc["mv_halves"] = mv.add_events(halves, part_rows, offset=acc["n"])
            acc["n"] += int(mask.sum())
            if self.count is not None:
                times = batch.ts_ms if idx is None else batch.ts_ms[idx]
                low, high = int(times.min()), int(times.max())
                acc["first_ms"] = min(acc.get("first_ms", low), low)
                acc["last_ms"] = max(acc.get("last_ms", high), high)
            if numeric_names:
                updated = self.numeric.update_many(
                    [acc["numeric"].get(n) or self.numeric.initialize() for n in numeric_names],
                    matrix if idx is None else matrix[:, idx],
                    [edges.get(n) for n in numeric_names],
                    [state["anchors"].get(n, 0.0) for n in numeric_names],
                )
                acc["numeric"].update(zip(numeric_names, updated, strict=True))
            for name, cats in categorical.items():
                cpart = cats if idx is None else cast(Cats, take(cats, idx))
                cprev = acc["categorical"].get(name) or self.categorical.initialize()
                acc["categorical"][name] = self.categorical.update(cprev, cpart)
            state["windows"][key] = acc
        if len(state["windows"]) > opened:  # by start: the same however the events were batched
            state["windows"] = dict(sorted(state["windows"].items(), key=lambda kv: int(kv[0])))
        return state

    def _multivariate_input(
        self,
        state: VersionState,
        batch: FeatureBatch,
        numeric: dict[str, npt.NDArray[np.float64]],
        categorical: dict[str, Cats],
    ) -> tuple[mv.Measured | None, npt.NDArray[np.float64] | None]:
        """``(measured, None)``: the batch's events measured against the reference's
        PCA, once it has one; ``(None, rows)``: the rows of the chosen features (the
        categorical ones as indicator columns), for the warm-up's moments;
        ``(None, None)``: nothing to count."""
        if not self.policy.multivariate:
            return None, None
        ref = state["reference"]
        if ref is not None:
            pca = ref.get("multivariate")
            if pca is None:
                return None, None
            codes = pca.get("categories", {})
            encoded = {
                name: _encoded(codes[name], batch, categorical, name)
                for name in pca["names"]
                if name in codes
            }
            return mv.measure(pca, self._rows(pca["names"], batch, {**numeric, **encoded})), None
        names = state.get("mv_names")
        if names is None:
            ignored = self.policy.ignored()
            candidates = [
                (n, k) for n, k in state["kinds"].items() if n not in OUTPUTS and n not in ignored
            ]
            names = mv.choose_features(
                [n for n, k in candidates if k == "numeric"],
                self.policy.multivariate_max_features,
            )
            chosen = mv.choose_categorical([n for n, k in candidates if k == "categorical"])
            if len(names) + len(chosen) < 2:
                return None, None
            state["mv_names"] = names
            state["mv_categorical"] = {n: [] for n in chosen}
        slots = dict(state.get("mv_categorical", {}))
        parts = [self._rows(names, batch, numeric)]
        for name in slots:
            given = categorical.get(name)
            column: Cats = (
                given if isinstance(given, Categories) else _category_list(batch, categorical, name)
            )
            slots[name] = mv.assign_slots(slots[name], column)
            parts.append(mv.indicators(slots[name], column))
        if slots:
            state["mv_categorical"] = slots
        return None, np.hstack(parts) if len(parts) > 1 else parts[0]

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
        # each feature's values stay together in memory (as ``mv.measure`` reads them)
        return np.stack(columns).T if columns else np.empty((n, 0))

    def _register_kinds(self, state: VersionState, batch: FeatureBatch) -> None:
        kinds = state["kinds"]
        tracked = sum(1 for name in kinds if name not in OUTPUTS)
        for name, values in batch.columns.items():
            if name in kinds or name in state["untracked"]:
                continue
            kind = infer_kind(values)
            if kind is None:
                continue
            if name not in OUTPUTS:
                if tracked >= self.policy.max_features:
                    if len(state["untracked"]) < MAX_UNTRACKED_NAMES:
                        state["untracked"] = [*state["untracked"], name]
                    continue
                tracked += 1
            kinds[name] = kind
            if kind == "numeric":
                state["anchors"] = {**state["anchors"], name: anchor_of(values)}
                if self.policy.multivariate and state["reference"] is None:
                    limits = mv.limits_of(numeric_column(values[: mv.LIMITS_SAMPLE]))
                    state["mv_limits"] = {**state.get("mv_limits", {}), name: limits}

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
        due = self._due(state, [int(k) for k in state["windows"]], state["watermark_ms"])
        if not due:
            return state, []
        state = {**state, "windows": dict(state["windows"])}
        reports = []
        for start in due:
            end = self.windows.window_end(start)
            cut = state.get("reference_from_ms")
            straddles = cut is not None and start < cut < end
            acc = window(self.windows, self.summaries, state, start, cut if straddles else None)
            last = state["windows"].pop(str(start), None)  # its last window closes
            prev = state["closed_until_ms"]
            state["closed_until_ms"] = end if prev is None else max(prev, end)
            late, state["late"] = state["late"], 0
            if state["reference"] is None:
                if self.count is not None:
                    self._next_chunk_unjudged(state, start)
                reports.append(absorb_warmup(p, self.summaries, state, acc, last, late,
                                             self.windows))
            elif straddles:
                reports.append(self._report(state, acc, late, judge=False, since_ms=cut,
                                            end_ms=end))
            elif judged_by_previous(state, start, end - start):
                previous = state.get("previous_reference")
                if previous is None:  # opened during the warm-up
                    reports.append(self._report(state, acc, late, judge=False, end_ms=end))
                else:
                    view: VersionState = {**state, "reference": previous}
                    reports.append(self._report(view, acc, late, end_ms=end))
                    state["streaks"] = view["streaks"]
            else:
                reports.append(self._report(state, acc, late, end_ms=end))
            if self.count is not None:
                reports[-1] = _count_bounds(reports[-1], acc, start)
        cut = state.get("reference_from_ms")
        if cut is not None and not any(int(k) < cut for k in state["windows"]):
            state["previous_reference"], state["reference_from_ms"] = None, None
        return state, reports

    def _due(self, state: VersionState, panes_ms: list[int], watermark_ms: int) -> list[int]:
        if self.count is not None:
            # A chunk closes with its Nth event: the "watermark" is the chunks filled.
            watermark_ms, lateness = state.get("counted", 0) // self.count, 0
        else:
            lateness = self.policy.allowed_lateness
        return self.windows.due(
            panes_ms,
            closed_until_ms=state["closed_until_ms"],
            watermark_ms=watermark_ms,
            allowed_lateness_ms=lateness,
            max_panes=self.max_panes,
        )

    def _next_chunk_unjudged(self, state: VersionState, start: int) -> None:
        """Count windows: the chunk after one that may complete the warm-up is opened
        now, so it is never judged by the multivariate signal should the reference be
        built (``drop_halves``), whether or not its first events came in the same batch:
        reports must not depend on how events were batched."""
        key = str(start + 1)
        if key not in state["windows"]:
            state["windows"][key] = {**new_window(start + 1), "mv_halves": None}

    def panes_of(self, state: VersionState, ts_ms: npt.NDArray[np.int64]) -> set[int]:
        """The panes events at ``ts_ms`` would open or add to (late ones open none);
        none for count windows (``would_close`` counts their events instead)."""
        if self.count is not None:
            return set()
        starts = np.unique(self.windows.pane_starts(ts_ms))
        closed = state["closed_until_ms"]
        if closed is not None:
            starts = starts[starts >= closed]
        return set(starts.tolist())

    def would_close(
        self, state: VersionState, panes: set[int], watermark_ms: int, pending: int = 0
    ) -> bool:
        """Whether ``close_ready`` would close a window had ``update`` counted events in
        ``panes`` (``panes_of``) up to ``watermark_ms`` (count windows: had it counted
        ``pending`` more events). Closing is monotone in the events counted (more panes,
        a later watermark), so while this is False for a run of batches, ``close_ready``
        after each of them would have closed nothing: the drift handler counts such a
        run as one batch (agents.drift.handler)."""
        if self.count is not None:
            counted = state.get("counted", 0)
            return (counted + pending) // self.count > counted // self.count
        wm = state["watermark_ms"]
        watermark_ms = watermark_ms if wm is None else max(wm, watermark_ms)
        known = {int(k) for k in state["windows"]}
        return bool(self._due(state, sorted(known | panes), watermark_ms))

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
        self, state: VersionState, acc: WindowAcc, late: int, *, judge: bool = True,
        since_ms: int | None = None, end_ms: int | None = None,
    ) -> DriftReport:
        return window_report(self.policy, self._compare, state, acc, late, judge=judge,
                             since_ms=since_ms, end_ms=end_ms)


def _count_bounds(report: DriftReport, acc: WindowAcc, index: int) -> DriftReport:
    """A count window's report: its events' times and its number, not chunk indices."""
    if "first_ms" not in acc:  # (no events: never closed, a chunk closes when full)
        return report.model_copy(update={"window_index": index})
    return report.model_copy(update={
        "window_start": iso(acc["first_ms"]),
        "window_end": iso(acc["last_ms"] + 1),
        "window_index": index,
    })
