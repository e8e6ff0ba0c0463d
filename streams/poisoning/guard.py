"""The poisoning guard: screen training records before any retraining may use them.

``PoisoningGuard(policy, trusted, profile)`` holds one model's checks, fitted
once on its trusted set (``streams.poisoning.checks``), and the state of its
open windows (``streams.poisoning.state``). ``screen(records)`` returns one
:class:`~streams.poisoning.verdict.Verdict` per record, in order: passed, or
quarantined with machine reasons, scores and a sentence (how:
``streams.poisoning.verdict``). Windows are tumbling windows of the records'
event time ``ts``; a window closes when a record at least ``window +
allowed_lateness`` past its start has been screened (or when more than
``max_open_windows`` are open), and ``reports()`` then returns its
:class:`~schemas.reports.PoisoningReport` (``streams.poisoning.report``).

A batch is screened in three steps: the signals each record shows on its own
(``record_signals``), then, window by window, what its window and source add
(``judge_sources``, ``count_duplicates``: records of a batch are counted into
their window and source before the sources are judged, so a batch's own flood
or burst counts against it), then the verdicts, counted into the window.
Records that passed in earlier batches are not called back (the window's
report says what happened). A record whose window has closed is *late*: it is
screened like any other and counted in the newest open window (``late`` in
:meth:`PoisoningGuard.window_counts`).

Records that waited for the trusted set (the handler holds those that arrive
before it) are screened with ``held=True``: their window's report counts them
as ``held`` and ``released``. :func:`~streams.poisoning.report.unscreened_report`
reports held records that were quarantined without screening (``no_trusted_set``).

State in, state out: everything ``screen`` changes is one ``LiveState``, whose
plain-data form ``GuardState`` (``state()``, ``restore()``) is what the agent
keeps, and what a guard is put back to after a restart; the guard holds
nothing else but its checks, which the same trusted set rebuilds. It is an
object rather than a fold over ``GuardState`` because reading that plain data
back costs as much as screening a batch at 20,000 duplicate keys, and four
times as much at the default 100,000 (measured: ``streams.poisoning.state``).

Nothing here reads a clock or does I/O; the same records in the same order
give the same verdicts and reports.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from schemas.events import TrainingRecord
from schemas.poisoning import PoisoningPolicy, TrustedSet
from schemas.reference import ReferenceProfile
from schemas.reports import PoisoningReport
from streams.batch import columns_from_rows
from streams.poisoning.checks import Checks
from streams.poisoning.encode import label_key
from streams.poisoning.label_consistency import LabelConsistency
from streams.poisoning.report import NO_TRUSTED_SET, unscreened_report, window_report
from streams.poisoning.signals import (
    UNSUSPECTED,
    Context,
    RecordSignals,
    Suspicion,
    count_duplicates,
    judge_sources,
    record_signals,
)
from streams.poisoning.sources import SourceTracker
from streams.poisoning.state import GuardState, LiveState, WindowCounts
from streams.poisoning.verdict import Verdict, decide
from streams.windows import closable, window_starts_ms

__all__ = [
    "NO_TRUSTED_SET",
    "GuardState",
    "PoisoningGuard",
    "Verdict",
    "WindowCounts",
    "unscreened_report",
]

Floats = npt.NDArray[np.float64]


class PoisoningGuard:
    """One model's screening: checks fitted on its trusted set, and its windows' state.

    State and its bounds: the checks' (``streams.poisoning.checks``: the trusted set
    of ``trusted_max_rows`` rows, the outlier trees), and at most ``max_open_windows``
    open windows, each with at most ``max_sources`` (+1) sources' counts and sums and
    ``duplicate_cache_size`` duplicate keys, and at most ``max_sources`` source
    histories (``GuardState``). :meth:`state_size` reports them.
    """

    def __init__(
        self,
        policy: PoisoningPolicy,
        trusted: TrustedSet,
        profile: ReferenceProfile | None = None,
    ) -> None:
        self.policy = policy
        self.model = trusted.model
        self.checks = Checks.fit(policy, trusted, profile)
        self.live = LiveState.fresh(self.checks)

    @property
    def labels(self) -> LabelConsistency | None:
        """The label check (None when labels are not judged)."""
        return self.checks.labels

    @property
    def notes(self) -> list[str]:
        """What this guard cannot judge, and why."""
        return list(self.checks.notes)

    @property
    def trusted_rows(self) -> int:
        return self.checks.trusted_rows

    @property
    def sources(self) -> SourceTracker:
        return self.live.sources

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
        p, live = self.policy, self.live
        n = len(records)
        ts = np.fromiter((r.ts_ms() for r in records), dtype=np.int64, count=n)
        starts = window_starts_ms(ts, p.window)
        watermark = int(ts.max()) if live.watermark is None else max(live.watermark, int(ts.max()))
        live.watermark = watermark
        late = np.zeros(n, dtype=np.bool_)
        if live.closed_through is not None:
            late = starts <= live.closed_through
            starts[late] = watermark - watermark % p.window

        columns = columns_from_rows([r.features for r in records])
        raw_labels = [r.label for r in records]
        keys = [label_key(v) for v in raw_labels]
        z = self.checks.encoder.encode(columns, n)
        sig = record_signals(self.checks, columns, keys, raw_labels, z)
        verdicts: list[Verdict | None] = [None] * n
        for window in sorted(set(starts.tolist())):
            rows = np.flatnonzero(starts == window)
            counts = live.windows.setdefault(window, WindowCounts())
            counts.late += int(late[rows].sum())
            counts.released += rows.size if held else 0
            for i, verdict in self._screen_window(window, rows.tolist(), records, z, sig, counts):
                verdicts[i] = verdict
        self._close(
            closable(
                sorted(live.windows),
                watermark_ms=watermark,
                window_ms=p.window,
                allowed_lateness_ms=p.allowed_lateness,
                max_open=p.max_open_windows,
            )
        )
        return [v for v in verdicts if v is not None]

    def _screen_window(
        self,
        window: int,
        rows: list[int],
        records: Sequence[TrainingRecord],
        z: Floats,
        sig: RecordSignals,
        counts: WindowCounts,
    ) -> list[tuple[int, Verdict]]:
        """The verdicts on the records ``rows`` of the batch, all in ``window``."""
        p, live = self.policy, self.live
        names = {i: counts.bucket(records[i].source, p.max_sources) for i in rows}
        by_source: dict[str, list[int]] = {}
        for i, name in names.items():
            by_source.setdefault(name, []).append(i)
        burst: dict[int, int] = {}
        suspicion: dict[str, Suspicion] = {}
        if p.source_check:
            burst, suspicion = judge_sources(p, live.sources, window, by_source, sig, z, counts)
        copies: dict[int, int] = {}
        flood: dict[int, bool] = {}
        if sig.dup_keys is not None:
            copies, flood = count_duplicates(live.duplicates, window, names, sig.dup_keys)
        out: list[tuple[int, Verdict]] = []
        for i, name in names.items():
            context = Context(
                name,
                window,
                copies.get(i, 0),
                flood.get(i, False),
                burst.get(i, 0),
                suspicion.get(name, UNSUSPECTED),
            )
            verdict = decide(self.checks, records[i], sig, i, context)
            counts.add(name, verdict.reasons)
            out.append((i, verdict))
        return out

    # -- windows and reports ---------------------------------------------------------

    def _close(self, starts: list[int]) -> None:
        live = self.live
        for start in starts:
            counts = live.windows.pop(start)
            live.reports.append(window_report(self.policy, self.model, start, counts))
            live.sources.close(start)
            live.duplicates.close(start)
            live.closed_through = (
                start if live.closed_through is None else max(live.closed_through, start)
            )

    def reports(self) -> list[PoisoningReport]:
        """Reports of the windows closed since the last call, oldest first."""
        out, self.live.reports = self.live.reports, []
        return out

    def flush(self) -> list[PoisoningReport]:
        """Close every open window (end of a replay, a shutdown) and return all reports due."""
        self._close(sorted(self.live.windows))
        return self.reports()

    def window_counts(self) -> dict[int, WindowCounts]:
        """The open windows' counts so far, by window start (ms)."""
        return dict(self.live.windows)

    def state_size(self) -> dict[str, int]:
        """How much state the guard holds now, to check against the policy's bounds."""
        outliers = self.checks.outliers
        return {
            "trusted_rows": self.checks.trusted_rows,
            "encoded_columns": self.checks.encoder.width,
            "outlier_nodes": outliers.nodes if outliers is not None else 0,
            **self.live.size(),
        }

    # -- state -----------------------------------------------------------------------

    def state(self) -> GuardState:
        """Everything :meth:`screen` changes, as plain data (dicts, lists, numbers, strings,
        bytes) for the agent's table: a guard built on the same trusted set and policy and
        given it with :meth:`restore` goes on exactly as this one would. See
        ``GuardState`` for what it holds and how large it gets."""
        return self.live.dump()

    def restore(self, state: GuardState) -> None:
        """Replace this guard's windows, sources and pending reports with ``state`` (from
        :meth:`state` of a guard on the same trusted set). Raises ValueError (or KeyError,
        TypeError) when it is not such a state; the guard is then unchanged."""
        self.live = LiveState.load(self.checks, state)

    def reset(self) -> None:
        """Forget every window, source and pending report (the fitted checks stay)."""
        self.live = LiveState.fresh(self.checks)
