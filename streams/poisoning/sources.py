"""Per-source behaviour: does a source's window look like its own past and its peers?

Every source of a model has, per open window, a few sums (records, records
with a trusted class, records per class, how many labels have a p-value at or
below each level of a small grid, per-column sums and sums of squares of the
encoded features), and a *history*: the same sums over its completed windows
with an exponential decay of ``1 / source_history`` per window, plus its last
``source_history`` window volumes. A source's window is judged after each
batch:

``label_disagreement``
    more of its labels are inconsistent with the trusted data than a clean
    source's would be. The label p-values of clean records are uniform
    (``streams.poisoning.label_consistency``), so of a source's ``m`` judged
    records about ``m * L`` have ``p <= L`` whatever the level ``L``. The
    level of the grid (log-spaced up to ``label_weak_rate``) that maximises
    ``count(p <= L) - m * L / source_fdr`` (records caught, minus the clean
    ones among them weighted ``1 / source_fdr``: every band of p-values it
    takes in holds at most that share of clean records, on average) is the
    source's level; the source is flagged when it gains anything, with at
    least ``source_min_flagged`` records at or below it, and that count is
    more than clean records would give (binomial test, p < ``source_alpha``).
    Its weakly inconsistent records are quarantined down to that level: a
    source with many flips gets a generous level, one with a few extreme ones
    a strict one, an honest one none. A clean source matches the trusted set
    whatever its peers do, so this test needs no peers (a campaign spread over
    every source is caught too).

The other tests need ``source_min_records`` records in the window:

``label_mix``
    its label distribution departs from its history *and* from the other
    sources' in the same window (each baseline that has ``source_min_records``
    records; at least one): total variation at least
    ``source_min_label_shift`` and a chi-square test p < ``source_alpha``. The
    other sources are the window's sources with ``source_min_records`` records;
    with three or more of them, their *median* label shares and column means
    (so that one flooding source does not make every honest one look odd).
``features``
    the mean of some encoded column departs from its history *and* from the
    other sources by at least ``source_min_feature_shift`` trusted standard
    deviations, with a Welch z-test at ``source_alpha`` Bonferroni-corrected
    over the columns.
``volume``
    it sent more than ``volume_factor`` times its usual window volume (median of
    its history) *and* more than that times the other sources' median in this
    window (each with a floor of ``source_min_records``).

A flag is evidence, not a verdict: a flagged source's records need one more
weak signal to be quarantined (``streams.poisoning.verdict``), and the source
stays suspect for ``suspicion_windows`` more windows. A source never seen
before (no completed window, while other sources have some) is *new*; the
guard caps its first window at ``new_source_burst`` records.

Bounds: at most ``max_sources`` histories (least recently seen forgotten, so
a forgotten source comes back as new), each ``2 * columns + classes + levels
+ 2`` numbers, ``source_history`` volumes and at most four flags' expiry; per
open window the same sums for at most ``max_sources`` sources plus one
``(other sources)`` bucket for the rest (``streams.poisoning.state`` buckets
them).

``state()`` is all of it as plain data (for the agent's table) and ``restore``
puts it back exactly, orders included. Each set of sums is ``2 * columns +
classes + levels + 2`` floats (MessagePack: 9 bytes each; measured with 2
classes and 16 levels: 0.36 KB at 6 encoded columns, 1.1 KB at the demo's 48,
4.9 KB at the default ``max_features`` of 256). At most ``max_sources``
histories (256: 0.29 MB at 48 columns, 1.24 MB at 256) with ``source_history``
volumes each, and per open window at most ``max_sources + 1`` sums (at the
default limits, 4 windows: 1.1 MB at 48 columns, 4.95 MB at 256; the demo's 5
sources: 11 KB in all).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import bdtrc, ndtri

from schemas.poisoning import PoisoningPolicy
from streams.drift.chi_square import chi_square

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

#: Where the sources of a window beyond ``max_sources`` are counted together.
OTHER_SOURCES = "(other sources)"


@dataclass
class Sums:
    """Sums over a set of records (one source's window, or a decayed history)."""

    n: float
    judged: float  # records whose label is a trusted class
    labels: Floats  # records per trusted class
    sums: Floats  # per encoded column
    sumsq: Floats
    levels: Floats  # records whose label p-value is at most each level of the tracker's grid

    def state(self) -> list[Any]:
        """``[n, judged, labels, sums, sumsq, levels]`` as numbers and lists of numbers."""
        return [self.n, self.judged, self.labels.tolist(), self.sums.tolist(),
                self.sumsq.tolist(), self.levels.tolist()]

    @classmethod
    def from_state(cls, state: Sequence[Any], classes: int, width: int, levels: int) -> Sums:
        """The sums ``state()`` gave; ValueError when their sizes are not these."""
        n, judged, labels, sums, sumsq, at = state
        out = cls(float(n), float(judged), np.asarray(labels, dtype=np.float64),
                  np.asarray(sums, dtype=np.float64), np.asarray(sumsq, dtype=np.float64),
                  np.asarray(at, dtype=np.float64))
        shape = (out.labels.shape, out.sums.shape, out.sumsq.shape, out.levels.shape)
        if shape != ((classes,), (width,), (width,), (levels,)):
            raise ValueError(f"stored source sums have sizes {shape}, not those of classes "
                             f"{classes}, columns {width}, levels {levels}")
        return out

    @classmethod
    def zeros(cls, classes: int, width: int, levels: int) -> Sums:
        return cls(0.0, 0.0, np.zeros(classes), np.zeros(width), np.zeros(width),
                   np.zeros(levels))

    def add(self, other: Sums, weight: float = 1.0) -> None:
        self.n += weight * other.n
        self.judged += weight * other.judged
        self.labels += weight * other.labels
        self.sums += weight * other.sums
        self.sumsq += weight * other.sumsq
        self.levels += weight * other.levels

    def scaled(self, factor: float) -> None:
        self.n *= factor
        self.judged *= factor
        self.labels *= factor
        self.sums *= factor
        self.sumsq *= factor
        self.levels *= factor


@dataclass
class History:
    """A source's completed windows, decayed; and whether it is under suspicion."""

    sums: Sums
    volumes: deque[int]
    windows: int = 0
    suspect_until: dict[str, int] = field(default_factory=dict)  # flag -> last window (ms)


@dataclass(frozen=True)
class Judgement:
    """What a source's window looks like so far: the flags that fired, each with a sentence."""

    flags: tuple[str, ...] = ()
    details: tuple[str, ...] = ()
    level: float = 0.0  # label p-value level its weakly inconsistent records are held at


@dataclass
class _Window:
    sources: dict[str, Sums] = field(default_factory=dict)


class SourceTracker:
    """Sums per source and window, histories per source, and the tests."""

    def __init__(
        self,
        policy: PoisoningPolicy,
        *,
        classes: int,
        columns: Sequence[str],
        levels: Sequence[float] = (),
    ) -> None:
        self.policy = policy
        self.levels = np.asarray(levels, dtype=np.float64)  # increasing p-value levels
        self.classes = classes
        self.columns = list(columns)
        self.width = width = len(self.columns)
        self.histories: OrderedDict[str, History] = OrderedDict()
        self._windows: dict[int, _Window] = {}
        self._decay = 1.0 - 1.0 / policy.source_history
        self._any_history = False
        self._feature_z = float(-ndtri(policy.source_alpha / (2 * max(width, 1))))

    # -- bookkeeping -----------------------------------------------------------------

    def add(
        self,
        window: int,
        source: str,
        *,
        label_index: Ints,
        level_index: Ints,
        z: Floats,
    ) -> None:
        """Count in one source's records of a batch (``label_index`` -1: not a trusted class;
        ``level_index``: the first level of the grid at or above the record's label p-value,
        the grid's size when above every level or not judged)."""
        win = self._windows.setdefault(window, _Window())
        judged = label_index >= 0
        part = Sums(
            float(z.shape[0]),
            float(judged.sum()),
            np.bincount(label_index[judged], minlength=self.classes).astype(np.float64)
            if self.classes
            else np.zeros(0),
            z.sum(axis=0),
            np.square(z).sum(axis=0),
            np.cumsum(np.bincount(level_index, minlength=self.levels.size + 1))[
                : self.levels.size
            ].astype(np.float64),
        )
        mine = win.sources.get(source)
        if mine is None:
            mine = win.sources[source] = Sums.zeros(self.classes, self.width, self.levels.size)
        mine.add(part)
        if source != OTHER_SOURCES:
            self._touch(source)

    def _touch(self, source: str) -> History:
        hist = self.histories.get(source)
        if hist is None:
            hist = History(Sums.zeros(self.classes, self.width, self.levels.size),
                           deque(maxlen=self.policy.source_history))
            self.histories[source] = hist
            while len(self.histories) > self.policy.max_sources:
                self.histories.popitem(last=False)
        else:
            self.histories.move_to_end(source)
        return hist

    def count(self, window: int, source: str) -> int:
        win = self._windows.get(window)
        sums = win.sources.get(source) if win else None
        return int(sums.n) if sums else 0

    def close(self, window: int) -> None:
        """Fold a closing window into its sources' histories."""
        win = self._windows.pop(window, None)
        if win is None:
            return
        for source in sorted(win.sources):
            if source == OTHER_SOURCES:
                continue
            hist = self._touch(source)
            hist.sums.scaled(self._decay)
            hist.sums.add(win.sources[source])
            hist.volumes.append(int(win.sources[source].n))
            hist.windows += 1
            self._any_history = True

    def state(self) -> dict[str, Any]:
        """Histories (least recently seen first) and open windows' sums as plain data."""
        return {
            "shape": [self.classes, self.width, int(self.levels.size)],
            "any_history": self._any_history,
            "histories": [
                {"source": name, "sums": h.sums.state(), "volumes": list(h.volumes),
                 "windows": h.windows, "suspect_until": [[f, u] for f, u in
                                                         h.suspect_until.items()]}
                for name, h in self.histories.items()
            ],
            "windows": [
                {"window": start, "sources": [[name, sums.state()]
                                              for name, sums in win.sources.items()]}
                for start, win in self._windows.items()
            ],
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Replace everything with what ``state()`` gave. ValueError when it was kept for
        other classes, columns or levels (another trusted set)."""
        shape = (self.classes, self.width, int(self.levels.size))
        if tuple(state["shape"]) != shape:
            raise ValueError(f"stored source state is for (classes, columns, levels) "
                             f"{tuple(state['shape'])}, not {shape}")
        histories: OrderedDict[str, History] = OrderedDict()
        for h in state["histories"]:
            histories[str(h["source"])] = History(
                Sums.from_state(h["sums"], *shape),
                deque((int(v) for v in h["volumes"]), maxlen=self.policy.source_history),
                int(h["windows"]),
                {str(f): int(u) for f, u in h["suspect_until"]},
            )
        while len(histories) > self.policy.max_sources:  # a smaller max_sources since
            histories.popitem(last=False)
        windows = {
            int(w["window"]): _Window({str(name): Sums.from_state(sums, *shape)
                                       for name, sums in w["sources"]})
            for w in state["windows"]
        }
        self.histories, self._windows = histories, windows
        self._any_history = bool(state["any_history"])

    def sources_in(self, window: int) -> int:
        win = self._windows.get(window)
        return len(win.sources) if win else 0

    # -- suspicion -------------------------------------------------------------------

    def is_new(self, source: str) -> bool:
        """Never completed a window, while some other source has."""
        hist = self.histories.get(source)
        return self._any_history and (hist is None or hist.windows == 0)

    def flags_from_before(self, window: int, source: str) -> set[str]:
        """Flags raised on the source in an earlier window that still hold in this one."""
        hist = self.histories.get(source)
        if hist is None:
            return set()
        return {flag for flag, until in hist.suspect_until.items() if window <= until}

    def mark_suspect(self, window: int, source: str, flags: Sequence[str],
                     window_ms: int) -> None:
        hist = self.histories.get(source)
        if hist is not None:
            until = window + self.policy.suspicion_windows * window_ms
            for flag in flags:
                hist.suspect_until[flag] = max(hist.suspect_until.get(flag, -1), until)

    # -- the tests -------------------------------------------------------------------

    def judge(self, window: int, source: str) -> Judgement:
        win = self._windows.get(window)
        if win is None or source not in win.sources:
            return Judgement()
        mine = win.sources[source]
        p = self.policy
        flags: list[str] = []
        details: list[str] = []
        level, detail = self._disagreement(mine)
        if detail:
            flags.append("label_disagreement")
            details.append(detail)
        if mine.n < p.source_min_records:
            return Judgement(tuple(flags), tuple(details), level)
        others = self._peers(win, source)
        hist = self.histories.get(source) if source != OTHER_SOURCES else None
        past = hist.sums if hist is not None and hist.windows > 0 else None

        bases = [(name, s) for name, s in (("its history", past), ("the other sources", others))
                 if s is not None and s.n >= p.source_min_records]
        if bases and self.classes and mine.judged >= p.source_min_records:
            found = [self._label_mix(mine, s, name) for name, s in bases]
            if all(found):
                flags.append("label_mix")
                details.append("; ".join(f for f in found if f))
        if bases and self.width:
            found = [self._features(mine, s, name) for name, s in bases]
            if all(found):
                flags.append("features")
                details.append("; ".join(f for f in found if f))

        volumes: list[tuple[str, float]] = []
        if hist is not None and hist.volumes:
            volumes.append(("its usual", float(np.median(list(hist.volumes)))))
        peers = [s.n for name, s in win.sources.items() if name not in (source, OTHER_SOURCES)]
        if peers:
            volumes.append(("the other sources' median", float(np.median(peers))))
        if volumes and all(mine.n > p.volume_factor * max(v, p.source_min_records)
                           for _, v in volumes):
            flags.append("volume")
            details.append(f"{int(mine.n)} records this window, more than {p.volume_factor:g}x "
                           + " and ".join(f"{what} {v:.0f}" for what, v in volumes))
        return Judgement(tuple(flags), tuple(details), level)

    def weak_level(self, window: int, source: str) -> float:
        """The label p-value level of a source flagged for its labels in an earlier window
        (still suspect): chosen on its window and its decayed history together, without the
        minimum count, so that its first records of a new window are held to what its
        recent past showed."""
        win = self._windows.get(window)
        mine = win.sources.get(source) if win else None
        total = Sums.zeros(self.classes, self.width, self.levels.size)
        if mine is not None:
            total.add(mine)
        hist = self.histories.get(source)
        if hist is not None:
            total.add(hist.sums)
        return self._level(total)[0]

    def _level(self, sums: Sums) -> tuple[float, float]:
        """The level ``L`` of the grid that maximises ``count(p <= L) - m * L / source_fdr``
        (records caught minus clean ones weighted ``1 / source_fdr``), and that count;
        (0, 0) when no level gains anything."""
        if sums.judged <= 0 or self.levels.size == 0:
            return 0.0, 0.0
        gain = sums.levels - sums.judged * self.levels / self.policy.source_fdr
        best = int(np.argmax(gain))
        if gain[best] <= 0:
            return 0.0, 0.0
        return float(self.levels[best]), float(sums.levels[best])

    def _peers(self, win: _Window, source: str) -> Sums | None:
        """What the other sources of the window look like: with three or more of them
        (each with ``source_min_records``), their median label shares and column means
        (one bad source cannot move it) with their pooled spread; with fewer, their sums."""
        peers = [s for name, s in win.sources.items()
                 if name != source and s.n >= self.policy.source_min_records]
        if not peers:
            return None
        pooled = Sums.zeros(self.classes, self.width, self.levels.size)
        for s in peers:
            pooled.add(s)
        if len(peers) < 3:
            return pooled
        means = np.median(np.vstack([s.sums / s.n for s in peers]), axis=0)
        spread = np.maximum(pooled.sumsq / pooled.n - (pooled.sums / pooled.n) ** 2, 0.0)
        robust = Sums(pooled.n, pooled.judged, pooled.labels.copy(),
                      means * pooled.n, (spread + means**2) * pooled.n, pooled.levels)
        if self.classes and pooled.judged > 0:
            shares = np.median(np.vstack([s.labels / max(s.judged, 1.0) for s in peers]), axis=0)
            if shares.sum() > 0:
                robust.labels = shares / shares.sum() * pooled.judged
        return robust

    def _disagreement(self, mine: Sums) -> tuple[float, str]:
        level, count = self._level(mine)
        if count < self.policy.source_min_flagged:
            return 0.0, ""
        m = round(mine.judged)
        pvalue = float(bdtrc(round(count) - 1, m, level))  # P(X >= count)
        if pvalue >= self.policy.source_alpha:
            return 0.0, ""
        return level, (
            f"{count:.0f} of its {m} labels are inconsistent with the trusted data at "
            f"p<={level:.3g}, where about {m * level:.1f} clean ones would be (binomial "
            f"p={pvalue:.2g})"
        )

    def _label_mix(self, mine: Sums, base: Sums, name: str) -> str:
        a = mine.labels
        b = base.labels
        if a.sum() <= 0 or b.sum() <= 0:
            return ""
        pa = a / a.sum()
        pb = b / b.sum()
        tv = 0.5 * float(np.abs(pa - pb).sum())
        if tv < self.policy.source_min_label_shift:
            return ""
        _, pvalue = chi_square(a, b)  # 1.0 with fewer than two labels seen
        if pvalue >= self.policy.source_alpha:
            return ""
        return f"label mix moved {tv:.2f} (total variation) from {name} (chi-square p={pvalue:.2g})"

    def _features(self, mine: Sums, base: Sums, name: str) -> str:
        ma = mine.sums / mine.n
        mb = base.sums / base.n
        va = np.maximum(mine.sumsq / mine.n - ma**2, 0.0)
        vb = np.maximum(base.sumsq / base.n - mb**2, 0.0)
        diff = ma - mb
        se = np.sqrt(va / mine.n + vb / base.n) + 1e-12
        z = np.abs(diff) / se
        hits = np.flatnonzero((z > self._feature_z)
                              & (np.abs(diff) >= self.policy.source_min_feature_shift))
        if hits.size == 0:
            return ""
        worst = int(hits[np.argmax(np.abs(diff[hits]))])
        return (f"{hits.size} feature mean(s) moved from {name}, most {self.columns[worst]} "
                f"by {diff[worst]:+.2f} sd")
