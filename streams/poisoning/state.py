"""The poisoning guard's state: what screening changes, in working form and as plain data.

``GuardState`` is the plain data (dicts, lists, numbers, strings, bytes) the
agent keeps in its table under ``guard|<model>``; ``LiveState`` is the same
state in the form screening works on (an LRU of duplicate keys, numpy sums per
source), and nothing else: ``LiveState.load(checks, s).dump() == s``, and a
guard holds no other state (its checks are configuration:
``streams.poisoning.checks``).

Why two forms rather than one fold over plain data: reading the plain data back
(``load``) rebuilds each window's LRU of duplicate keys. Measured on 500-record
batches of the tests' synthetic data (2 shared cores, so ranges): ``load`` takes 3 to
4 ms at 2,500 keys, 18 to 39 ms at 20,000 (about what screening the batch took) and
80 to 95 ms at the default 100,000 (screening took 20 ms; ``dump`` 36 to 84 ms more).
So the guard keeps the working form between batches and is given the plain data
only when the table's differs (a restart, a rebalance); the agent dumps it once per
batch of messages.

What bounds it, all from the policy: at most ``max_open_windows`` windows, each
with at most ``max_sources`` + 1 sources and ``duplicate_cache_size`` keys, and at
most ``max_sources`` source histories (sizes: ``GuardState``; now: ``LiveState.size``).
A ``GuardState`` of another ``STATE_VERSION``, or kept for another trusted set
(other classes, columns or levels), is refused with ValueError.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from schemas.reports import PoisoningReport
from streams.poisoning.checks import Checks
from streams.poisoning.duplicates import DuplicateCounter
from streams.poisoning.sources import OTHER_SOURCES, SourceTracker

#: The layout of ``GuardState``; a stored state of another version is refused.
STATE_VERSION = 1


@dataclass
class Counts:
    """One source's records in one window: seen, passed, and quarantined per reason."""

    seen: int = 0
    passed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


@dataclass
class WindowCounts:
    """What one open window has seen so far, per source."""

    sources: dict[str, Counts] = field(default_factory=dict)
    flags: dict[str, set[str]] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)
    late: int = 0
    #: records that waited for the trusted set before they were screened
    released: int = 0

    def bucket(self, source: str, max_sources: int) -> str:
        """The name ``source`` is counted under: its own for the window's first
        ``max_sources`` sources, ``OTHER_SOURCES`` for the rest.

        >>> w = WindowCounts()
        >>> [w.bucket(s, 2) for s in ["a", "b", "c", "a", "d"]]
        ['a', 'b', '(other sources)', 'a', '(other sources)']
        """
        if source not in self.sources and len(self.sources) >= max_sources:
            source = OTHER_SOURCES
        if source not in self.sources:
            self.sources[source] = Counts()
        return source

    def add(self, source: str, reasons: Sequence[str]) -> None:
        """Count in one record of ``source`` (a name from ``bucket``): passed without
        reasons, else quarantined for each; a new source's burst flags it."""
        if "new_source_burst" in reasons:
            self.flags.setdefault(source, set()).add("new_source_burst")
        c = self.sources[source]
        c.seen += 1
        if not reasons:
            c.passed += 1
        else:
            c.reasons.update(reasons)

    def dump(self, start: int) -> dict[str, Any]:
        """This window's counts as plain data (one item of ``GuardState["windows"]``)."""
        return {
            "window": start,
            "sources": [
                [name, c.seen, c.passed, dict(c.reasons)] for name, c in self.sources.items()
            ],
            "flags": [[name, sorted(flags)] for name, flags in self.flags.items()],
            "details": [[name, text] for name, text in self.details.items()],
            "late": self.late,
            "released": self.released,
        }

    @classmethod
    def load(cls, state: dict[str, Any]) -> tuple[int, WindowCounts]:
        """The window start and counts ``dump`` gave."""
        return int(state["window"]), cls(
            sources={
                str(name): Counts(
                    int(seen), int(passed), Counter({str(r): int(n) for r, n in reasons.items()})
                )
                for name, seen, passed, reasons in state["sources"]
            },
            flags={str(name): {str(f) for f in flags} for name, flags in state["flags"]},
            details={str(name): str(text) for name, text in state["details"]},
            late=int(state["late"]),
            released=int(state["released"]),
        )


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


@dataclass
class LiveState:
    """``GuardState`` in working form: the open windows' counts by start (ms), the sources'
    sums and histories, the duplicate keys, the newest event time screened, the newest
    window closed, and the reports of closed windows not yet taken."""

    sources: SourceTracker
    duplicates: DuplicateCounter
    windows: dict[int, WindowCounts] = field(default_factory=dict)
    watermark: int | None = None
    closed_through: int | None = None
    reports: list[PoisoningReport] = field(default_factory=list)

    @classmethod
    def fresh(cls, checks: Checks) -> LiveState:
        """The state before the first record: no window, no source, no report."""
        policy = checks.policy
        return cls(
            SourceTracker(
                policy,
                classes=checks.classes,
                columns=checks.encoder.columns,
                levels=checks.levels.tolist(),
            ),
            DuplicateCounter(
                cache_size=policy.duplicate_cache_size, max_copies=policy.duplicate_max_copies
            ),
        )

    def dump(self) -> GuardState:
        """All of it as plain data, for the agent's table."""
        return {
            "version": STATE_VERSION,
            "watermark": self.watermark,
            "closed_through": self.closed_through,
            "windows": [self.windows[start].dump(start) for start in sorted(self.windows)],
            "reports": [r.model_dump(mode="json") for r in self.reports],
            "duplicates": self.duplicates.state(),
            "sources": self.sources.state(),
        }

    def size(self) -> dict[str, int]:
        """How much of each bounded part it holds now (the largest open window's)."""
        starts = sorted(self.windows)
        histories = self.sources.histories
        return {
            "open_windows": len(starts),
            "window_sources": max((len(self.windows[w].sources) for w in starts), default=0),
            "source_window_sums": max((self.sources.sources_in(w) for w in starts), default=0),
            "duplicate_keys": max((self.duplicates.keys(w) for w in starts), default=0),
            "source_histories": len(histories),
            "source_history_volumes": max((len(h.volumes) for h in histories.values()), default=0),
        }

    @classmethod
    def load(cls, checks: Checks, state: GuardState) -> LiveState:
        """The state ``dump`` gave, for a guard with these checks; cut to the policy's
        bounds when it was kept under larger ones. Raises ValueError (or KeyError,
        TypeError) when it is not such a state."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"guard state version {state.get('version')!r} is not {STATE_VERSION}")
        live = cls.fresh(checks)
        live.duplicates.restore(state["duplicates"])
        live.sources.restore(state["sources"])
        live.windows = dict(WindowCounts.load(w) for w in state["windows"])
        live.reports = [PoisoningReport.model_validate(r) for r in state["reports"]]
        watermark, closed = state["watermark"], state["closed_through"]
        live.watermark = None if watermark is None else int(watermark)
        live.closed_through = None if closed is None else int(closed)
        return live
