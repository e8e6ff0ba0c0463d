"""One model's KPI state, read from the KPI agent's table, folded and written back.

A ``ModelBatch`` is one model's share of one message, or of a batch of them
(``KpiHandler.handle_batch``): it decodes each state at its first use, keeps it,
calls the kernels in ``streams`` on it (the label join, the windows' accumulators,
their lifecycle, the concept detector, the shadow comparison) and writes each
changed key back once (``write``): the partition transaction of quix-streams'
state, for this pipeline.

Everything lives in one table, keyed so that a model's entries share the
partition of its messages (both input topics are keyed by model and must have
the same number of partitions):

* the label join's entries (``streams.join``: ``p|``, ``l|``, ``x|``, ``m|``);
* ``s|model|version|variant`` -> the series' open windows (``streams.kpi.series``);
* ``w|model|version|variant|start`` -> one KPI window (``streams.kpi.window``); with
  count windows (``kpi.window: {events: N}``) ``start`` is the window's number, and a
  pending prediction keeps it (``i``) for its label (``streams.kpi.series``);
* ``c|model|version|variant`` -> the concept-drift detector;
* ``h|model|version|start`` -> a shadow window's comparison with the version that
  served the same requests (``streams.kpi.shadow``), kept and dropped with the
  shadow's window ``w|model|version|shadow|start``;
* ``r|model|version`` -> the version's score calibration (``ScoreCalibration`` JSON,
  or ``null``: its newest profile has none), from its ReferenceProfile;
* ``q|model|version`` -> the version's concept-detector calibration (``ConceptCalibration``
  JSON, or ``null``), from its ReferenceProfile (``streams.kpi.concept_calibration``);
* ``b|model|version`` -> the version's KPI bands (``PerformanceBands`` JSON, or ``null``),
  from its ReferenceProfile (``streams.kpi.bands``);
* ``k|model|`` -> the model's series (``ModelIndex``);
* ``\\x00driftline|models|<partition>`` -> the models tracked (``agents.inputs.admission``);
* ``\\x00driftline|kpi-models|<partition>`` -> the models with state there, the
  policy's included (for the timer, :meth:`KpiHandler.tick`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from itertools import repeat
from operator import itemgetter
from typing import Any, NotRequired, TypedDict

import numpy as np
import orjson

from agents.inputs.codec import Origin, Row
from agents.inputs.future import FutureBound
from agents.runtime.runner import Outcome
from schemas.policy import KpiPolicy
from schemas.reference import ScoreCalibration
from schemas.reports import ConceptDetectorInfo, KpiReport
from schemas.windows import CountWindow
from streams.join import SEP, JoinOutcome, LabelJoin, ModelClock, lane_key
from streams.kpi import bands as kpi_bands
from streams.kpi import concept_calibration as concept_cal
from streams.kpi import estimate as cbpe
from streams.kpi import series as lifecycle
from streams.kpi import shadow as comparison
from streams.kpi.concept import ConceptDetector
from streams.kpi.labels import canonical
from streams.kpi.series import SeriesState
from streams.kpi.window import NO_CALIBRATION, KpiWindow, WindowState
from streams.windows import tumbling

logger = logging.getLogger(__name__)

Store = MutableMapping[bytes, bytes]
Series = tuple[str, str]  # (model_version, variant)

#: versions x variants tracked per model; predictions of further ones are counted only
MAX_SERIES = 64


class ModelIndex(TypedDict):
    series: list[list[str]]  # [version, variant], at most MAX_SERIES
    #: per input ("p", "l"): messages in a row beyond the future bound (agents.inputs.future)
    ahead: NotRequired[dict[str, list[int]]]


#: The kinds of table key this handler writes, each the first part of a key whose
#: parts are joined by ``streams.join.SEP`` (the stored names are one letter, as the
#: label join's own keys, and stay so: tables written before still read).
MODEL_INDEX = "k"  # (k, model, ""): the model's series (ModelIndex)
SERIES_INDEX = "s"  # (s, model, version, variant): a series' open windows (SeriesState)
WINDOW = "w"  # (w, model, version, variant, start_ms): a window's accumulators
DETECTOR = "c"  # (c, model, version, variant): a series' concept detector
CALIBRATION = "r"  # (r, model, version): a version's score calibration (or null)
CONCEPT = "q"  # (q, model, version): a version's concept-detector calibration (or null)
SHADOW = "h"  # (h, model, version, start_ms): a shadow window's comparison (ShadowState)
#: the variant whose predictions are paired with the served ones (a lane of the join)
SHADOW_VARIANT = "shadow"
BANDS = "b"  # (b, model, version): a version's KPI bands from its reference (or null)


def table_key(kind: str, *parts: str) -> bytes:
    return SEP.join(p.encode() for p in (kind, *parts))


def _ts_ms(event: Row) -> int:
    return int(event["ts_ms"])


_REQUEST_ID, _TS_MS, _LABEL = itemgetter("request_id"), itemgetter("ts_ms"), itemgetter("label")
#: a waiting prediction's (streams.kpi.window.Waiting) time, version and variant
_T, _V, _A = itemgetter("t"), itemgetter("v"), itemgetter("a")


class ModelBatch:
    """One model's share of one message, or of a batch of them (``handle_batch``): its
    state decoded at the first read, kept here, written once per key (``write``)."""

    def __init__(
        self,
        model: str,
        store: Store,
        *,
        now_ms: int,
        kernels: tuple[KpiPolicy, LabelJoin, KpiWindow],
        future: FutureBound,
        changed: dict[tuple[str, str, str, int], int],
    ) -> None:
        self.model = model
        self.store = store
        self.now_ms = now_ms  # processing time: when the windows touched now changed
        #: the model's KPI policy, label join and window kernel (``KpiHandler._for``)
        self.policy, self.join, self.kpi = kernels
        self.future = future
        #: processing time each window last changed (``KpiHandler._changed``)
        self.changed = changed
        #: count windows: N (``streams.kpi.series``); None: windows of event time
        window = self.policy.window
        self.count = window.events if isinstance(window, CountWindow) else None
        self.windows: dict[tuple[Series, int], WindowState] = {}
        self.indexes: dict[Series, SeriesState] = {}
        self.detectors: dict[Series, ConceptDetector] = {}
        #: (shadow version, window start) -> its comparison (streams.kpi.shadow)
        self.comparisons: dict[tuple[str, int], comparison.ShadowState] = {}
        raw = store.get(table_key(MODEL_INDEX, model, ""))
        self.meta: ModelIndex = orjson.loads(raw) if raw is not None else {"series": []}
        self.series = self.meta["series"]
        self.meta_changed = False
        self.untracked = 0

    # -- state access ------------------------------------------------------------

    def _tracked(self, series: Series) -> bool:
        if list(series) in self.series:
            return True
        if len(self.series) >= MAX_SERIES:
            return False
        self.series.append(list(series))
        self.meta_changed = True
        return True

    def index(self, series: Series) -> SeriesState:
        if series not in self.indexes:
            raw = self.store.get(table_key(SERIES_INDEX, self.model, *series))
            self.indexes[series] = orjson.loads(raw) if raw is not None else lifecycle.initialize()
        return self.indexes[series]

    def window(self, series: Series, start: int) -> WindowState:
        """The window's accumulators, the window opened (marked) if it was not."""
        state = self._accumulators(series, start)
        if lifecycle.open_window(self.index(series), start):
            self.changed[(self.model, *series, start)] = self.now_ms
        return state

    def _accumulators(self, series: Series, start: int) -> WindowState:
        key = (series, start)
        if key not in self.windows:
            raw = self.store.get(table_key(WINDOW, self.model, *series, str(start)))
            self.windows[key] = orjson.loads(raw) if raw is not None else self.kpi.initialize()
        return self.windows[key]

    def touched(self, series: Series, start: int) -> None:
        lifecycle.touch(self.index(series), start)
        self.changed[(self.model, *series, start)] = self.now_ms

    def start_of(self, ts_ms: int) -> int:
        return lifecycle.start_of(ts_ms, self.policy.window)

    def key_of(self, waiting: dict[str, Any]) -> int:
        """The window of a waiting prediction: its count window, as counted on arrival
        (-1: none, it came before kpi.window became a count), or the one of its time."""
        if self.count is not None:
            return int(waiting.get("i", -1))
        return self.start_of(waiting["t"])

    # -- inputs --------------------------------------------------------------------

    def bound(
        self,
        rows: list[Row],
        kind: str,
        origin: Origin,
        raw: bytes | None,
        position: Callable[[], dict[int, int]],
        out: Outcome,
    ) -> list[Row]:
        """The rows within ``max_future_ms`` of the model's stream time (the largest ts
        accepted on predictions or labels); dead letters for the others."""
        clock = self.join.clock(self.store, self.model)
        known = [t for t in (clock["predictions_ms"], clock["labels_ms"]) if t is not None]
        ts = np.fromiter(map(_TS_MS, rows), dtype=np.int64, count=len(rows))
        ahead = self.meta.setdefault("ahead", {})
        check = self.future.check(ts, stream_ms=max(known, default=None), ahead=ahead.get(kind))
        if check.ahead != ahead.get(kind):
            if check.ahead is None:
                del ahead[kind]
            else:
                ahead[kind] = check.ahead
            self.meta_changed = True
        if check.keep.all():
            return rows
        where = position()
        out.dead.extend(
            self.future.letters(
                check, ts, origin, raw, rows=rows, positions=[where.get(id(r)) for r in rows]
            )
        )
        return [r for r, keep in zip(rows, check.keep.tolist(), strict=True) if keep]

    def predictions(self, rows: list[Row]) -> None:
        groups: dict[tuple[Series, int], list[Row]] = {}
        pending: list[tuple[str, int, dict[str, Any]]] = []
        segment_keys = self.policy.segments
        count = self.count
        for event in rows:
            series = (event["model_version"], event.get("variant", "champion"))
            if not self._tracked(series):
                self.untracked += 1
                continue
            ts = _ts_ms(event)
            if count is None:
                start = self.start_of(ts)
            else:
                start = lifecycle.count_key(self.index(series), count)
            if lifecycle.arrive(self.index(series), start) == "lost":
                continue
            groups.setdefault((series, start), []).append(event)
            segment = event.get("segment") or {}
            request_id = event["request_id"]
            waiting: dict[str, Any] = {  # streams.kpi.window.Waiting
                "v": series[0],
                "a": series[1],
                "t": ts,
                "p": event["prediction"],
                "s": event.get("score"),
                "g": {k: segment[k] for k in segment_keys if k in segment},
            }
            if count is not None:
                waiting["i"] = start  # a late label joins the window it was counted in
            pending.append(
                (
                    # a shadow's answer waits beside the served one (streams.join, lanes)
                    lane_key(request_id, SHADOW_VARIANT)
                    if series[1] == SHADOW_VARIANT
                    else request_id,
                    ts,
                    waiting,
                )
            )
        for (series, start), events in groups.items():
            key = (series, start)
            self.windows[key] = self.kpi.add_predictions(self.window(series, start), events)
            self.touched(series, start)
            if count is not None:
                times = list(map(_ts_ms, events))
                lifecycle.span(self.index(series), start, min(times), max(times))
        self._joined(self.join.add_predictions(self.store, self.model, pending))

    def labels(self, rows: list[Row]) -> None:
        self._joined(
            self.join.add_label_columns(
                self.store,
                self.model,
                list(map(_REQUEST_ID, rows)),
                list(map(_TS_MS, rows)),
                list(map(_LABEL, rows)),
            )
        )

    def _joined(self, joined: JoinOutcome) -> None:
        """Fold completed predictions into their windows, and their errors, in arrival
        order, into their series' concept detector. Per label one look-up of each field
        it needs; the rest on arrays (a window's matches are a group of indices)."""
        predictions = joined.predictions
        n = len(predictions)
        if n:
            ts = np.fromiter(map(_T, predictions), dtype=np.int64, count=n)
            starts = (
                tumbling(self.policy.window).pane_starts(ts)
                if self.count is None
                else np.fromiter(  # key_of on each, at C speed: the count window's number
                    map(dict.get, predictions, repeat("i"), repeat(-1)), dtype=np.int64, count=n
                )
            )
            versions = list(map(_V, predictions))
            variants = list(map(_A, predictions))
            if versions.count(versions[0]) == n and variants.count(variants[0]) == n:
                codes = np.zeros(n, dtype=np.int64)  # one series: the usual case
                names: list[Series] = [(versions[0], variants[0])]
            else:
                seen: dict[Series, int] = {}
                codes = np.fromiter(
                    (seen.setdefault(sv, len(seen)) for sv in zip(versions, variants, strict=True)),
                    dtype=np.int64,
                    count=n,
                )
                names = list(seen)
            label_ts = np.asarray(joined.label_ts_ms, dtype=np.int64)
            # one group per (series, window), each group's rows in arrival order
            slot = np.unique(starts, return_inverse=True)[1].reshape(-1)  # window's rank
            group_keys, inverse = np.unique(
                codes * (int(slot.max()) + 1) + slot, return_inverse=True
            )
            order = np.argsort(inverse, kind="stable")
            bounds = np.searchsorted(inverse[order], np.arange(len(group_keys) + 1))
            errors = np.full(n, np.nan)
            for g in range(len(group_keys)):
                rows = order[bounds[g] : bounds[g + 1]]
                first = int(rows[0])
                series, start = names[int(codes[first])], int(starts[first])
                if start < 0 or lifecycle.retired(self.index(series), start):
                    # Not expected: a window retires only after its predictions have
                    # been labeled or expired (or, -1, the prediction came before
                    # kpi.window became a count). Counted, should it ever happen.
                    self.index(series)["lost"] += len(rows)
                    continue
                if len(rows) == n:
                    preds, labels = predictions, joined.labels
                else:
                    picked = rows.tolist()
                    preds = [predictions[i] for i in picked]
                    labels = [joined.labels[i] for i in picked]
                state, errs = self.kpi.add_labeled_columns(
                    self.window(series, start), preds, labels, label_ts[rows], ts_ms=ts[rows]
                )
                errors[rows] = errs
                self.windows[(series, start)] = state
                self.touched(series, start)
            usable = ~np.isnan(errors)
            for code, series in enumerate(names):
                mine = np.flatnonzero(usable & (codes == code))
                if not mine.size:
                    continue
                detector = self._detector(series)
                for fired in detector.update(errors[mine]):
                    window = (series, int(starts[mine[fired]]))
                    if window[1] < 0:
                        continue
                    self.windows[window] = self.kpi.mark_concept_drift(self.window(*window))
            if joined.pairs or joined.late_pairs:
                self._labeled_pairs(joined, errors)
        if joined.arrivals:
            self._arrived_pairs(joined.arrivals)
        expired: dict[tuple[Series, int], int] = {}
        for p in joined.expired:
            key = ((p["v"], p["a"]), self.key_of(p))
            expired[key] = expired.get(key, 0) + 1
        for (series, start), count in expired.items():
            if lifecycle.is_open(self.index(series), start):  # else only the join counts it
                self.windows[(series, start)] = self.kpi.add_expired(
                    self.window(series, start), count
                )
                self.touched(series, start)

    def comparison(self, version: str, start: int) -> comparison.ShadowState:
        key = (version, start)
        if key not in self.comparisons:
            raw = self.store.get(table_key(SHADOW, self.model, version, str(start)))
            self.comparisons[key] = (
                orjson.loads(raw) if raw is not None else comparison.initialize()
            )
        return self.comparisons[key]

    def _shadow_window(self, shadow: dict[str, Any]) -> tuple[str, int] | None:
        """The shadow window a pair belongs to (its shadow prediction's), if still open."""
        version, start = shadow["v"], self.key_of(shadow)
        if [version, SHADOW_VARIANT] not in self.series:
            return None  # not tracked (beyond MAX_SERIES)
        if not lifecycle.is_open(self.index((version, SHADOW_VARIANT)), start):
            return None  # retired: its report is final
        return version, start

    def _arrived_pairs(self, arrivals: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
        """Requests answered by a shadow and the served version, met on arrival."""
        groups: dict[tuple[str, int], list[tuple[dict[str, Any], dict[str, Any]]]] = {}
        for pair in arrivals:
            if pair[1].get("a") != SHADOW_VARIANT or pair[0].get("a") == SHADOW_VARIANT:
                continue
            window = self._shadow_window(pair[1])
            if window is not None:
                groups.setdefault(window, []).append(pair)
        for (version, start), pairs in groups.items():
            comparison.add_arrivals(self.comparison(version, start), pairs, self.policy)
            self.touched((version, SHADOW_VARIANT), start)

    def _labeled_pairs(self, joined: JoinOutcome, errors: np.ndarray[Any, Any]) -> None:
        """Requests answered by a shadow and the served version, completed by one label
        (in one call, ``pairs``, or one after the other, ``late_pairs``): both versions'
        errors on the same requests."""
        predictions = joined.predictions
        rows = [
            (predictions[a], predictions[b], float(errors[a]), float(errors[b]))
            for a, b in joined.pairs
        ]
        if joined.late_pairs:
            others = [other for _, other in joined.late_pairs]
            labels = [joined.labels[i] for i, _ in joined.late_pairs]
            late_errors = self.kpi.errors(others, labels)  # type: ignore[arg-type]
            for (i, other), err in zip(joined.late_pairs, late_errors, strict=True):
                now = (predictions[i], float(errors[i]))
                then = (other, float(err))
                first, second = (then, now) if now[0].get("a") == SHADOW_VARIANT else (now, then)
                rows.append((first[0], second[0], first[1], second[1]))
        groups: dict[tuple[str, int], list[tuple[str, float, float]]] = {}
        for served, shadow, served_err, shadow_err in rows:
            if shadow.get("a") != SHADOW_VARIANT or served.get("a") == SHADOW_VARIANT:
                continue
            window = self._shadow_window(shadow)
            if window is not None:
                groups.setdefault(window, []).append((str(served["v"]), served_err, shadow_err))
        for (version, start), found in groups.items():
            comparison.add_labeled(
                self.comparison(version, start),
                [v for v, _, _ in found],
                [a for _, a, _ in found],
                [b for _, _, b in found],
            )
            self.touched((version, SHADOW_VARIANT), start)

    def calibration(self, version: str) -> tuple[cbpe.Calibration | None, str]:
        """The version's calibration, or None and the note that says why there is none."""
        raw = self.store.get(table_key(CALIBRATION, self.model, version))
        if raw is None:
            return None, NO_CALIBRATION
        if raw == b"null":
            return None, (
                f"no performance estimate before labels: the reference profile of {version} "
                "has no calibration (built without score and label columns, before driftline "
                "fitted one, or for a regression model): rebuild it with driftline reference "
                "build"
            )
        cal = ScoreCalibration.model_validate_json(raw)
        if canonical(cal.positive_label) != canonical(self.policy.positive_label):
            return None, (
                f"no performance estimate before labels: {version}'s calibration counts "
                f"{cal.positive_label!r} as positive, the policy {self.policy.positive_label!r}"
            )
        return {"edges": cal.edges, "probability": cal.probability, "count": cal.count}, ""

    def _detector(self, series: Series) -> ConceptDetector:
        """The series' concept detector (updated in place, written by ``write``)."""
        if series not in self.detectors:
            raw = self.store.get(table_key(DETECTOR, self.model, *series))
            self.detectors[series] = concept_cal.detector(self.concept(series[0]), raw)
        return self.detectors[series]

    def concept(self, version: str) -> ConceptDetectorInfo:
        """The concept detector the version's series run: calibrated on its reference or not."""
        raw = self.store.get(table_key(CONCEPT, self.model, version))
        return concept_cal.setting(self.policy, raw, version=version)

    # -- reports ---------------------------------------------------------------------

    def finish(self, *, due_at_ms: int | None = None, settle: bool = False) -> list[KpiReport]:
        """``close``, then every state change written back (``write``)."""
        reports = self.close(due_at_ms=due_at_ms, settle=settle)
        self.write()
        return reports

    def close(self, *, due_at_ms: int | None = None, settle: bool = False) -> list[KpiReport]:
        """Reports due (on event time; with ``due_at_ms``, processing time too; with
        ``settle``, every revision owed, whenever its window changed)."""
        clock = self.join.clock(self.store, self.model)
        reports: list[KpiReport] = []
        if clock["predictions_ms"] is not None:
            for version, variant in self.series:
                reports.extend(self._close((version, variant), clock, due_at_ms, settle))
        return reports

    def write(self) -> None:
        """Every state change written back, once per key."""
        for series, detector in self.detectors.items():
            self.store[table_key(DETECTOR, self.model, *series)] = detector.dumps()
        for (series, start), state in self.windows.items():
            if lifecycle.is_open(self.index(series), start):
                key = table_key(WINDOW, self.model, *series, str(start))
                self.store[key] = orjson.dumps(state)
        for (version, start), compared in self.comparisons.items():
            if lifecycle.is_open(self.index((version, SHADOW_VARIANT)), start):
                key = table_key(SHADOW, self.model, version, str(start))
                self.store[key] = orjson.dumps(compared)
        for series, index in self.indexes.items():
            self.store[table_key(SERIES_INDEX, self.model, *series)] = orjson.dumps(index)
        if self.meta_changed:
            self.store[table_key(MODEL_INDEX, self.model, "")] = orjson.dumps(self.meta)
        if self.untracked:
            logger.warning(
                "model %s: %d predictions of versions/variants beyond the first %d are not tracked",
                self.model,
                self.untracked,
                MAX_SERIES,
            )
            self.untracked = 0

    def _close(
        self, series: Series, clock: ModelClock, due_at_ms: int | None, settle: bool = False
    ) -> list[KpiReport]:
        predictions = clock["predictions_ms"]
        assert predictions is not None
        index = self.index(series)
        changed: dict[int, int] = {}
        for start in lifecycle.changed(index):
            at = self.changed.get((self.model, *series, start))
            if at is None and due_at_ms is not None:
                # changed before this process owned it (a restart, a rebalance): the
                # delay counts from now; at the end of a replay, it has passed
                at = (
                    0
                    if settle
                    else self.changed.setdefault((self.model, *series, start), due_at_ms)
                )
            if at is not None:
                changed[start] = at
        out: list[KpiReport] = []
        for emit in lifecycle.close(
            index,
            self.policy,
            predictions_ms=predictions,
            labels_ms=clock["labels_ms"],
            now_ms=due_at_ms,
            changed_ms=changed,
        ):
            self.changed.pop((self.model, *series, emit.start_ms), None)
            calibration, why_not = self.calibration(series[0])
            result = self.kpi.report(
                self._accumulators(series, emit.start_ms),
                calibration,
                no_calibration=why_not,
                bands=kpi_bands.setting(
                    self.policy,
                    self.store.get(table_key(BANDS, self.model, series[0])),
                    version=series[0],
                ),
            )
            out.append(
                lifecycle.report(
                    self.model,
                    *series,
                    result,
                    emit,
                    window_ms=0
                    if self.count is not None
                    else lifecycle.end_of(emit.start_ms, self.policy.window) - emit.start_ms,
                    orphans=clock["orphan_labels"],
                    concept=self.concept(series[0]),
                    shadow=(
                        comparison.report(self.comparison(series[0], emit.start_ms), self.policy)
                        if series[1] == SHADOW_VARIANT
                        else None
                    ),
                )
            )
            if emit.final:
                self.windows.pop((series, emit.start_ms), None)
                self.store.pop(table_key(WINDOW, self.model, *series, str(emit.start_ms)), None)
                if series[1] == SHADOW_VARIANT:
                    self.comparisons.pop((series[0], emit.start_ms), None)
                    self.store.pop(
                        table_key(SHADOW, self.model, series[0], str(emit.start_ms)), None
                    )
        return out
