"""The poisoning guard: screen training records before any retraining may use them.

``PoisoningGuard(policy, trusted, profile)`` holds one model's checks, fitted
once on its trusted set (and profile), and the bounded state of its open
windows. ``screen(records)`` returns one :class:`Verdict` per record, in
order: passed, or quarantined with machine reasons, scores and a sentence.
Windows are tumbling windows of the records' event time ``ts``; a window
closes when a record at least ``window + allowed_lateness`` past its start has
been screened (or when more than ``max_open_windows`` are open), and
``reports()`` then returns its :class:`~schemas.reports.PoisoningReport`.

How a record is judged (each check switchable in ``PoisoningPolicy``):

* *decisive* signals quarantine on their own: a schema reason
  (``streams.poisoning.schema_check``); ``label_inconsistent``, a label
  p-value at most ``label_false_rate`` (``streams.poisoning.label_consistency``:
  about that share of clean records gets one); ``duplicate_flood``
  (``streams.poisoning.duplicates``); and ``new_source_burst`` (a source never
  seen before, while others have history, beyond ``new_source_burst`` records
  in its first window);
* *weak* signals need their source to back them (``source_anomaly``,
  ``streams.poisoning.sources``): a label p-value up to ``label_weak_rate``
  counts when it is at or below the level its source earned by sending more
  inconsistent labels than a clean source would (flag ``label_disagreement``),
  an ``outlier`` score above its calibrated threshold counts when the source's
  feature means or volume departed (flags ``features``, ``volume``). A flag
  holds for the rest of its window and ``suspicion_windows`` more. An outlier
  alone never quarantines, nor does a flagged source alone: its honest
  records pass.

A quarantined record lists every signal that fired, decisive or not. Records
of a batch are counted into their window and source before the sources are
judged, so a batch's own flood or burst counts against it; records that passed
in earlier batches are not called back (the window's report says what
happened). A record whose window has closed is *late*: it is screened like
any other and counted in the newest open window (``late`` in
:meth:`PoisoningGuard.window_counts`).

Records that waited for the trusted set (the handler holds those that arrive
before it) are screened with ``held=True``: their window's report counts them
as ``held`` and ``released``. :func:`unscreened_report` reports held records
that were quarantined without screening (``no_trusted_set``).

Nothing here reads a clock or does I/O; the same records in the same order
give the same verdicts and reports.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict

import numpy as np
import numpy.typing as npt

from schemas.events import TrainingRecord
from schemas.poisoning import PoisoningPolicy, TrustedSet
from schemas.reference import ReferenceProfile
from schemas.reports import PoisoningReport, QuarantinedRecord, SourceCounts
from streams.batch import Value, columns_from_rows
from streams.poisoning.duplicates import DuplicateCounter, near_duplicate_keys
from streams.poisoning.encode import Encoder, label_key
from streams.poisoning.label_consistency import LabelConsistency, LabelScores
from streams.poisoning.outliers import OutlierScorer
from streams.poisoning.schema_check import SchemaResult, Support, check_schema
from streams.poisoning.sources import OTHER_SOURCES, SourceTracker
from streams.poisoning.trusted import capped
from streams.windows import closable, window_starts_ms

Floats = npt.NDArray[np.float64]

#: The reason of a record quarantined because its model had no trusted set to screen it.
NO_TRUSTED_SET = "no_trusted_set"


@dataclass(frozen=True)
class Verdict:
    """The guard's decision on one record."""

    record_id: str
    source: str
    window_start_ms: int
    passed: bool
    reasons: tuple[str, ...]
    scores: dict[str, float]
    explanation: str

    def quarantined(self, record: TrainingRecord) -> QuarantinedRecord:
        """The record unchanged, with why (for ``training-data.quarantine``)."""
        return QuarantinedRecord(record=record, reasons=list(self.reasons), scores=self.scores)


#: Source flags that back an outlier (a weak label is backed by its source's level).
FEATURE_FLAGS = frozenset({"features", "volume"})


@dataclass(frozen=True)
class _Signals:
    """What each record of a batch shows on its own."""

    schema: SchemaResult
    labels: LabelScores | None
    strong: npt.NDArray[np.bool_]
    weak: npt.NDArray[np.bool_]
    label_index: npt.NDArray[np.int64]  # the record's trusted class, -1 if none
    level_index: npt.NDArray[np.int64]  # first p-value level at or above its label's p
    outlier: Floats | None
    is_outlier: npt.NDArray[np.bool_]
    dup_keys: list[bytes] | None


@dataclass
class _Counts:
    seen: int = 0
    passed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


@dataclass
class WindowCounts:
    """What one open window has seen so far, per source."""

    sources: dict[str, _Counts] = field(default_factory=dict)
    flags: dict[str, set[str]] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)
    late: int = 0
    #: records that waited for the trusted set before they were screened
    released: int = 0


#: The layout of ``PoisoningGuard.state()``; a stored state of another version is refused.
STATE_VERSION = 1


class GuardState(TypedDict):
    """A guard's mutable state as plain data (``PoisoningGuard.state()``), and its bounds.

    ``windows``: per open window (at most ``max_open_windows``), its counts per source
    (at most ``max_sources`` + 1: seen, passed, quarantined per reason), flagged
    sources with a sentence each, late and released records: under 0.5 KB for 5
    sources. ``reports``: reports of closed windows not yet taken (none between two
    messages: the handler takes them after each). ``duplicates``: per open window at
    most ``duplicate_cache_size`` keys (``streams.poisoning.duplicates``: 12.5 bytes a
    key encoded, up to 1.25 MB a window at the default 100,000 keys, the largest part).
    ``sources``: at most ``max_sources`` histories and, per open window, at most
    ``max_sources`` + 1 sources' sums (``streams.poisoning.sources``: ``2 * columns +
    classes + levels + 2`` floats each, 1.1 KB at 48 encoded columns).

    Measured, MessagePack-encoded (agents.runtime.state_codec), on the demo's traffic
    (48 encoded columns, 2 classes, 5 sources, 60 s windows): windows of 2,500
    records, at most 41 KB; of 5,000, at most 80 KB. At the default limits (4 open
    windows of 100,000 keys, 256 sources) about 5 MB of duplicate keys plus 1.4 MB of
    source sums at 48 columns (6.2 MB at 256).
    """

    version: int
    watermark: int | None
    closed_through: int | None
    windows: list[dict[str, Any]]
    reports: list[dict[str, Any]]
    duplicates: list[dict[str, Any]]
    sources: dict[str, Any]


def _counts_state(start: int, counts: WindowCounts) -> dict[str, Any]:
    return {
        "window": start,
        "sources": [[name, c.seen, c.passed, dict(c.reasons)]
                    for name, c in counts.sources.items()],
        "flags": [[name, sorted(flags)] for name, flags in counts.flags.items()],
        "details": [[name, text] for name, text in counts.details.items()],
        "late": counts.late,
        "released": counts.released,
    }


def _counts_from_state(state: dict[str, Any]) -> tuple[int, WindowCounts]:
    return int(state["window"]), WindowCounts(
        sources={str(name): _Counts(int(seen), int(passed),
                                    Counter({str(r): int(n) for r, n in reasons.items()}))
                 for name, seen, passed, reasons in state["sources"]},
        flags={str(name): {str(f) for f in flags} for name, flags in state["flags"]},
        details={str(name): str(text) for name, text in state["details"]},
        late=int(state["late"]),
        released=int(state["released"]),
    )


def p_value_levels(strong: float, weak: float, steps: int = 16) -> npt.NDArray[np.float64]:
    """The grid of label p-value levels a source's level is chosen from: ``steps`` levels
    spaced evenly in log from the strong level to the weak one (p-values of a small
    trusted set come in steps of ``1 / (n + 1)``; a fine grid keeps them apart).

    >>> [round(v, 4) for v in p_value_levels(0.005, 0.05, steps=4).tolist()]
    [0.005, 0.0108, 0.0232, 0.05]
    """
    if weak <= strong:
        return np.array([strong])
    return np.geomspace(strong, weak, steps)


class PoisoningGuard:
    """One model's screening: checks fitted on its trusted set, and its windows' state.

    State and its bounds: the trusted set (``trusted_max_rows`` rows of at most
    ``max_features`` encoded columns, and a k-d tree per class over them), the
    outlier trees (``outlier_trees * (2^(outlier_height+1) - 1)`` nodes), at most
    ``max_open_windows`` open windows, each with at most ``max_sources`` (+1)
    sources' counts and sums and ``duplicate_cache_size`` duplicate keys, and at
    most ``max_sources`` source histories. :meth:`state_size` reports them.
    """

    def __init__(
        self,
        policy: PoisoningPolicy,
        trusted: TrustedSet,
        profile: ReferenceProfile | None = None,
    ) -> None:
        self.policy = policy
        self.model = trusted.model
        self.notes: list[str] = []
        trusted = capped(trusted, policy.trusted_max_rows)
        self.trusted_rows = len(trusted)
        keys = [label_key(v) for v in trusted.labels]
        self.encoder = Encoder.fit(
            trusted.features,
            max_features=policy.max_features,
            max_categories=policy.max_categories,
        )
        z = self.encoder.encode(trusted.features, len(trusted))
        classes = sorted(set(keys))
        classification = 2 <= len(classes) <= policy.max_classes
        if not classification:
            self.notes.append(
                f"labels are not judged: the trusted set has {len(classes)} distinct labels "
                f"(the label check needs 2 to {policy.max_classes} classes)"
            )
        self.labels: LabelConsistency | None = None
        if policy.label_check and classification:
            self.labels = LabelConsistency(
                z, keys, k=policy.k, linear=policy.label_linear,
                false_rate=policy.label_false_rate,
            )
        known_labels = frozenset(classes) if classification else None
        self.support = (
            Support.from_profile(profile, policy, known_labels)
            if profile is not None
            else Support.from_columns(trusted.features, policy, known_labels)
        )
        self.outliers: OutlierScorer | None = None
        if policy.outlier_check and self.encoder.width:
            self.outliers = OutlierScorer(
                z,
                n_trees=policy.outlier_trees,
                height=policy.outlier_height,
                rate=policy.outlier_rate,
                seed=policy.outlier_seed,
            )
        self.levels = np.zeros(0)
        if self.labels is not None:
            self.levels = p_value_levels(
                self.labels.strong_level(policy.label_false_rate), policy.label_weak_rate
            )
        self.reset()

    def reset(self) -> None:
        """Forget every window, source and pending report (the fitted checks stay)."""
        policy = self.policy
        self.duplicates = DuplicateCounter(
            cache_size=policy.duplicate_cache_size, max_copies=policy.duplicate_max_copies
        )
        self.sources = SourceTracker(
            policy,
            classes=len(self.labels.classes) if self.labels is not None else 0,
            columns=self.encoder.columns,
            levels=self.levels.tolist(),
        )
        self._windows: dict[int, WindowCounts] = {}
        self._watermark: int | None = None
        self._closed_through: int | None = None
        self._reports: list[PoisoningReport] = []

    # -- screening -------------------------------------------------------------------

    def screen(self, records: Sequence[TrainingRecord], *, held: bool = False) -> list[Verdict]:
        """One verdict per record, in order. Records must be of this guard's model.

        ``held``: the records waited for the trusted set (they arrived before it); the
        window's report counts them as ``held`` and ``released``.
        """
        if not records:
            return []
        wrong = {r.model for r in records} - {self.model}
        if wrong:
            raise ValueError(f"this guard screens model {self.model!r}, not {sorted(wrong)}")
        p = self.policy
        n = len(records)
        ts = np.fromiter((r.ts_ms() for r in records), dtype=np.int64, count=n)
        starts = window_starts_ms(ts, p.window)
        watermark = int(ts.max()) if self._watermark is None else max(self._watermark,
                                                                       int(ts.max()))
        self._watermark = watermark
        late = np.zeros(n, dtype=np.bool_)
        if self._closed_through is not None:
            late = starts <= self._closed_through
            starts[late] = watermark - watermark % p.window

        columns = columns_from_rows([r.features for r in records])
        raw_labels = [r.label for r in records]
        keys = [label_key(v) for v in raw_labels]
        z = self.encoder.encode(columns, n)
        sig = self._signals(columns, keys, raw_labels, z)
        verdicts: list[Verdict | None] = [None] * n
        for window in sorted(set(starts.tolist())):
            rows = np.flatnonzero(starts == window)
            counts = self._windows.setdefault(window, WindowCounts())
            counts.late += int(late[rows].sum())
            counts.released += rows.size if held else 0
            for i, verdict in self._screen_window(window, rows, records, z, sig, counts):
                verdicts[i] = verdict
        self._close(
            closable(
                sorted(self._windows),
                watermark_ms=watermark,
                window_ms=p.window,
                allowed_lateness_ms=p.allowed_lateness,
                max_open=p.max_open_windows,
            )
        )
        return [v for v in verdicts if v is not None]

    def _signals(
        self,
        columns: Mapping[str, Sequence[Value]],
        keys: list[str],
        raw_labels: list[bool | float | str],
        z: Floats,
    ) -> _Signals:
        """What each record shows on its own (no window, no source)."""
        p = self.policy
        n = z.shape[0]
        schema = (
            check_schema(columns, keys, raw_labels, self.support, margin=p.range_margin)
            if p.schema_check
            else SchemaResult([[] for _ in range(n)], np.zeros(n), [""] * n)
        )
        none = np.zeros(n, dtype=np.bool_)
        labels = self.labels.score(z, keys) if self.labels is not None else None
        strong, weak = none, none
        label_index = np.full(n, -1, dtype=np.int64)
        level_index = np.full(n, self.levels.size, dtype=np.int64)
        if labels is not None and self.labels is not None:
            with np.errstate(invalid="ignore"):
                strong = labels.pvalue <= self.labels.strong_level(p.label_false_rate)
                weak = labels.pvalue <= p.label_weak_rate
            # records the schema check holds back do not count towards their source's labels
            valid = np.array([not r for r in schema.reasons], dtype=np.bool_)
            label_index = np.array([self.labels.index.get(k, -1) for k in keys], dtype=np.int64)
            label_index[~valid] = -1
            judged = np.isfinite(labels.pvalue) & valid
            level_index[judged] = np.searchsorted(self.levels, labels.pvalue[judged] - 1e-12)
        outlier = self.outliers.score(z) if self.outliers is not None else None
        is_outlier = (
            outlier > self.outliers.threshold
            if outlier is not None and self.outliers is not None
            else none
        )
        return _Signals(
            schema=schema,
            labels=labels,
            strong=strong,
            weak=weak,
            label_index=label_index,
            level_index=level_index,
            outlier=outlier,
            is_outlier=is_outlier,
            dup_keys=near_duplicate_keys(z, p.duplicate_resolution)
            if p.duplicate_check
            else None,
        )

    def _screen_window(
        self,
        window: int,
        rows: npt.NDArray[np.int64],
        records: Sequence[TrainingRecord],
        z: Floats,
        sig: _Signals,
        counts: WindowCounts,
    ) -> list[tuple[int, Verdict]]:
        p = self.policy
        row_list = rows.tolist()
        # A window counts at most max_sources sources by name, the rest as one bucket.
        names: dict[int, str] = {}
        by_source: dict[str, list[int]] = {}
        for i in row_list:
            name = records[i].source
            if name not in counts.sources and len(counts.sources) >= p.max_sources:
                name = OTHER_SOURCES
            if name not in counts.sources:
                counts.sources[name] = _Counts()
            names[i] = name
            by_source.setdefault(name, []).append(i)

        burst: dict[int, int] = {}  # record -> its place in a new source's first window
        flags: dict[str, set[str]] = {}
        level: dict[str, float] = {}  # label p-value level of a label-suspect source
        details: dict[str, str] = {}
        if p.source_check:
            for name, idx in by_source.items():
                before = self.sources.count(window, name)
                new = name != OTHER_SOURCES and self.sources.is_new(name)
                ix = np.asarray(idx, dtype=np.int64)
                self.sources.add(window, name, label_index=sig.label_index[ix],
                                 level_index=sig.level_index[ix], z=z[ix])
                if new:
                    burst.update((i, before + rank + 1) for rank, i in enumerate(idx))
            for name in by_source:
                judged = self.sources.judge(window, name)
                if judged.flags:
                    self.sources.mark_suspect(window, name, judged.flags, p.window)
                    counts.flags.setdefault(name, set()).update(judged.flags)
                    counts.details[name] = "; ".join(judged.details)
                carried = self.sources.flags_from_before(window, name) - set(judged.flags)
                flags[name] = set(judged.flags) | carried
                level[name] = judged.level
                if not judged.level and "label_disagreement" in carried:
                    level[name] = self.sources.weak_level(window, name)
                said = list(judged.details)
                if carried:
                    said.append(f"flagged earlier ({', '.join(sorted(carried))})")
                details[name] = "; ".join(said)

        copies: dict[int, int] = {}
        flood: dict[int, bool] = {}
        if sig.dup_keys is not None:
            got, floods = self.duplicates.add(
                window, [names[i] for i in row_list], [sig.dup_keys[i] for i in row_list]
            )
            copies = dict(zip(row_list, got.tolist(), strict=True))
            flood = dict(zip(row_list, floods.tolist(), strict=True))

        out: list[tuple[int, Verdict]] = []
        for i in row_list:
            name = names[i]
            verdict = self._decide(
                i, records[i], name, window, sig,
                copies=copies.get(i, 0), flood=flood.get(i, False),
                burst=burst.get(i, 0), flags=flags.get(name, set()),
                level=level.get(name, 0.0), detail=details.get(name, ""),
            )
            if "new_source_burst" in verdict.reasons:
                counts.flags.setdefault(name, set()).add("new_source_burst")
            c = counts.sources[name]
            c.seen += 1
            if verdict.passed:
                c.passed += 1
            else:
                c.reasons.update(verdict.reasons)
            out.append((i, verdict))
        return out

    def _decide(
        self,
        i: int,
        record: TrainingRecord,
        source: str,
        window: int,
        sig: _Signals,
        *,
        copies: int,
        flood: bool,
        burst: int,
        flags: set[str],
        level: float,
        detail: str,
    ) -> Verdict:
        p = self.policy
        reasons = list(sig.schema.reasons[i])
        parts = [sig.schema.details[i]] if sig.schema.details[i] else []
        scores: dict[str, float] = {}
        if sig.schema.range_excess[i] > 0:
            scores["range_excess"] = float(sig.schema.range_excess[i])
        label_text = ""
        if sig.labels is not None and self.labels is not None and np.isfinite(
            sig.labels.pvalue[i]
        ):
            scores["label_p"] = float(sig.labels.pvalue[i])
            scores["label_ratio"] = float(sig.labels.ratio[i])
            nll = float(sig.labels.nll[i])
            if np.isfinite(nll):
                scores["label_nll"] = nll
            if sig.weak[i] or sig.strong[i]:
                preferred = self.labels.classes[int(sig.labels.preferred[i])]
                label_text = (
                    f"label {record.label!r} is inconsistent with the trusted data, which "
                    f"prefers {preferred!r} (p={scores['label_p']:.3g}; neighbour distance "
                    f"ratio {scores['label_ratio']:.2f}"
                    + (f", linear p(label)={np.exp(-nll):.2g}" if np.isfinite(nll) else "")
                    + ")"
                )
        if sig.outlier is not None and self.outliers is not None:
            scores["outlier"] = float(sig.outlier[i])
            scores["outlier_threshold"] = self.outliers.threshold
        if sig.dup_keys is not None:
            scores["copies"] = float(copies)
        if p.source_check:
            scores["source_flags"] = float(len(flags))

        if sig.strong[i]:
            reasons.append("label_inconsistent")
            parts.append(label_text)
        if flood:
            reasons.append("duplicate_flood")
            parts.append(
                f"{copies} copies from {source} in this window (more than "
                f"{p.duplicate_max_copies})"
                if copies > p.duplicate_max_copies
                else f"{copies} copies from {source}, which floods copies in this window"
            )
        if burst > p.new_source_burst:
            reasons.append("new_source_burst")
            parts.append(f"new source {source} sent {burst} records in its first window "
                         f"(the first {p.new_source_burst} pass)")
        # Weak signals, each with the kind of source flag that backs it.
        weak: list[tuple[str, str, bool]] = []
        if sig.weak[i] and not sig.strong[i]:
            backed = scores["label_p"] <= level
            weak.append(("label_inconsistent", label_text + (
                f" (weak evidence; at most p={level:.3g} from this source)" if backed
                else " (weak evidence)"), backed))
        if sig.is_outlier[i]:
            weak.append(("outlier", f"unusual features (outlier score {scores['outlier']:.3f} "
                         f"above {scores['outlier_threshold']:.3f})",
                         bool(flags & FEATURE_FLAGS)))
        source_text = f"source {source} is suspect: {detail}" if flags else ""
        if reasons:  # decisive: add whatever else fired, as context
            reasons.extend(name for name, _, _ in weak)
            parts.extend(text for _, text, _ in weak)
            if flags:
                reasons.append("source_anomaly")
                parts.append(source_text)
        elif any(backed for _, _, backed in weak):
            reasons = [name for name, _, _ in weak] + ["source_anomaly"]
            parts = [text for _, text, _ in weak] + [source_text]
        if reasons:
            explanation = "quarantined: " + "; ".join(parts)
        else:
            explanation = "passed" + (
                "; not enough alone: " + "; ".join(text for _, text, _ in weak) if weak else ""
            )
        return Verdict(
            record_id=record.record_id,
            source=record.source,
            window_start_ms=window,
            passed=not reasons,
            reasons=tuple(reasons),
            scores=scores,
            explanation=explanation,
        )

    # -- windows and reports ---------------------------------------------------------

    def _close(self, starts: list[int]) -> None:
        for start in starts:
            counts = self._windows.pop(start)
            self._reports.append(self._report(start, counts))
            self.sources.close(start)
            self.duplicates.close(start)
            self._closed_through = (
                start if self._closed_through is None else max(self._closed_through, start)
            )

    def reports(self) -> list[PoisoningReport]:
        """Reports of the windows closed since the last call, oldest first."""
        out, self._reports = self._reports, []
        return out

    def flush(self) -> list[PoisoningReport]:
        """Close every open window (end of a replay, a shutdown) and return all reports due."""
        self._close(sorted(self._windows))
        return self.reports()

    def window_counts(self) -> dict[int, WindowCounts]:
        """The open windows' counts so far, by window start (ms)."""
        return dict(self._windows)

    def state_size(self) -> dict[str, int]:
        """How much state the guard holds now, to check against the policy's bounds."""
        open_starts = sorted(self._windows)
        return {
            "trusted_rows": self.trusted_rows,
            "encoded_columns": self.encoder.width,
            "outlier_nodes": self.outliers.nodes if self.outliers is not None else 0,
            "open_windows": len(open_starts),
            "window_sources": max((len(self._windows[w].sources) for w in open_starts),
                                  default=0),
            "source_window_sums": max((self.sources.sources_in(w) for w in open_starts),
                                      default=0),
            "duplicate_keys": max((self.duplicates.keys(w) for w in open_starts), default=0),
            "source_histories": len(self.sources.histories),
            "source_history_volumes": max(
                (len(h.volumes) for h in self.sources.histories.values()), default=0
            ),
        }

    # -- state -----------------------------------------------------------------------

    def state(self) -> GuardState:
        """Everything :meth:`screen` changes, as plain data (dicts, lists, numbers, strings,
        bytes) for the agent's table: a guard built on the same trusted set and policy and
        given it with :meth:`restore` goes on exactly as this one would. See
        ``GuardState`` for what it holds and how large it gets."""
        return {
            "version": STATE_VERSION,
            "watermark": self._watermark,
            "closed_through": self._closed_through,
            "windows": [_counts_state(start, self._windows[start])
                        for start in sorted(self._windows)],
            "reports": [r.model_dump(mode="json") for r in self._reports],
            "duplicates": self.duplicates.state(),
            "sources": self.sources.state(),
        }

    def restore(self, state: GuardState) -> None:
        """Replace this guard's windows, sources and pending reports with ``state`` (from
        :meth:`state` of a guard on the same trusted set). Raises ValueError (or KeyError,
        TypeError) when it is not such a state; the guard is then unchanged."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"guard state version {state.get('version')!r} is not "
                             f"{STATE_VERSION}")
        duplicates = DuplicateCounter(cache_size=self.policy.duplicate_cache_size,
                                      max_copies=self.policy.duplicate_max_copies)
        sources = SourceTracker(self.policy, classes=self.sources.classes,
                                columns=self.encoder.columns, levels=self.levels.tolist())
        duplicates.restore(state["duplicates"])
        sources.restore(state["sources"])
        windows = dict(_counts_from_state(w) for w in state["windows"])
        reports = [PoisoningReport.model_validate(r) for r in state["reports"]]
        watermark, closed = state["watermark"], state["closed_through"]
        self.duplicates, self.sources, self._windows, self._reports = (
            duplicates, sources, windows, reports)
        self._watermark = None if watermark is None else int(watermark)
        self._closed_through = None if closed is None else int(closed)

    def _report(self, start: int, counts: WindowCounts) -> PoisoningReport:
        p = self.policy
        sources = {
            name: SourceCounts(
                seen=c.seen,
                passed=c.passed,
                quarantined={r: c.reasons[r] for r in sorted(c.reasons)},
            )
            for name, c in sorted(counts.sources.items())
        }
        seen = sum(c.seen for c in counts.sources.values())
        held = seen - sum(c.passed for c in counts.sources.values())
        share = held / seen if seen else 0.0
        campaign_sources = [
            (name, c.seen - c.passed, (c.seen - c.passed) / c.seen)
            for name, c in sorted(counts.sources.items())
            if c.seen
            and c.seen - c.passed >= p.campaign_min_records
            and (c.seen - c.passed) / c.seen >= p.campaign_source_share
        ]
        flagged = sorted(counts.flags)
        said = [f"{held} of {seen} records quarantined ({share:.1%})"]
        status: Literal["ok", "suspect", "campaign"]
        if held >= p.campaign_min_records and share >= p.campaign_window_share:
            status = "campaign"
            said.append(f"the window's quarantined share passes {p.campaign_window_share:.0%}")
        elif campaign_sources:
            status = "campaign"
        elif flagged or share >= p.suspect_share:
            status = "suspect"
        else:
            status = "ok"
        for name, n, s in campaign_sources:
            said.append(f"{name}: {n} quarantined, {s:.0%} of its records (campaign limit "
                        f"{p.campaign_source_share:.0%})")
        if status == "suspect" and share >= p.suspect_share:
            said.append(f"above the suspect share {p.suspect_share:.0%}")
        for name in flagged:
            why = counts.details.get(name, "")
            said.append(f"source {name} flagged: {', '.join(sorted(counts.flags[name]))}"
                        + (f" ({why})" if why else ""))
        if counts.late:
            said.append(f"{counts.late} late records (their own window had closed) counted here")
        if counts.released:
            said.append(f"{counts.released} records waited for the trusted set, then were screened")
        return PoisoningReport(
            model=self.model,
            window_start=datetime.fromtimestamp(start / 1000, tz=UTC),
            window_end=datetime.fromtimestamp((start + p.window) / 1000, tz=UTC),
            sources=sources,
            status=status,
            reason="; ".join(said),
            held=counts.released,
            released=counts.released,
        )


def unscreened_report(
    policy: PoisoningPolicy, model: str, records: Sequence[TrainingRecord], why: str
) -> PoisoningReport:
    """The report of held records quarantined without screening (``no_trusted_set``):
    counted per source, over the windows their ``ts`` spans; status ``suspect``.

    >>> from schemas.events import TrainingRecord
    >>> r = TrainingRecord(record_id="1", model="m", ts=120.5, source="crm",
    ...                    features={"x": 1.0}, label=True)
    >>> report = unscreened_report(PoisoningPolicy(window="60s"), "m", [r], "no trusted set")
    >>> report.window_start.isoformat(), report.unscreened, report.sources["crm"].quarantined
    ('1970-01-01T00:02:00+00:00', 1, {'no_trusted_set': 1})
    """
    if not records:
        raise ValueError("an unscreened report needs records")
    ts = [r.ts_ms() for r in records]
    start = min(ts) - min(ts) % policy.window
    end = max(ts) - max(ts) % policy.window + policy.window
    by_source = Counter(r.source for r in records)
    n = len(records)
    return PoisoningReport(
        model=model,
        window_start=datetime.fromtimestamp(start / 1000, tz=UTC),
        window_end=datetime.fromtimestamp(end / 1000, tz=UTC),
        sources={
            name: SourceCounts(seen=k, passed=0, quarantined={NO_TRUSTED_SET: k})
            for name, k in sorted(by_source.items())
        },
        status="suspect",
        reason=f"{n} records quarantined unscreened ({NO_TRUSTED_SET}): {why}",
        held=n,
        unscreened=n,
    )
