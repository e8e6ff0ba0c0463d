"""What the policy agent remembers about one model, and what bounds it.

Everything is keyed by event time (window starts and ends in epoch ms), so
state rebuilt from a replay is the same. Bounds: ``MAX_WINDOWS`` recent
windows per kind (drift, and KPI per variant; ``MAX_POOLED`` for the champion's
KPI count windows), ``max_commands_per_hour`` issue times; nothing grows with
traffic.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Recent windows kept per kind: enough for any streak the policy can ask for
# up to this length (longer streaks are counted as this many).
MAX_WINDOWS = 16

#: The champion's KPI count windows kept (``{events: N}``): a canary's count window
#: is compared with every champion window overlapping it (``streams.policy.pairing``),
#: and at canary weight w one window of N predictions spans about (1 - w) / w of the
#: champion's (9 at 0.1, 19 at 0.05, 49 at 0.02), more while the canary's labels lag
#: behind. A comparison that would need a window let go is not made (held, with why).
MAX_POOLED = 64


def epoch_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


class WindowSummary(BaseModel):
    """The part of a drift or KPI report the rules look at, plus its identity."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["drift", "kpi", "poisoning"]
    model: str
    model_version: str
    variant: str = "champion"
    window_start: int
    window_end: int
    #: count windows (``{events: N}``): the window's number, which orders and names it
    #: (two count windows may start at the same time); None for windows of time
    window_index: int | None = None
    revision: int = 0
    status: str
    n: int = 0  # events (drift) or predictions (KPI)
    n_labeled: int = 0
    errors: int | None = None  # labeled predictions that were wrong (classification)
    error_rate: float | None = None  # serving errors
    latency_p99_ms: float | None = None
    concept_drift: bool = False
    why: list[str] = Field(default_factory=list)  # drifted features / missed targets
    #: KPI: the status rests on estimated breaches alone (KpiReport.estimated)
    estimated: bool = False
    # A shadow's window: its comparison with the champion (KpiReport.shadow), against
    # ``versus``; None on every other summary, and then left out of the evidence.
    versus: str | None = None
    pairs: int | None = None
    agreement: float | None = None  # classification
    prediction_diff: float | None = None  # regression: mean |prediction difference|
    score_diff: float | None = None  # mean |score difference|
    labeled_pairs: int | None = None
    #: on the labeled pairs: errors (classification) or mae (regression), each version
    versus_error: float | None = None
    shadow_error: float | None = None

    def evidence(self) -> dict[str, Any]:
        data = self.model_dump(exclude_defaults=False)
        for name in (*SHADOW_FIELDS, "window_index"):  # as before they existed: command
            if data[name] is None:  # ids stay the same
                del data[name]
        return data


#: WindowSummary fields only a shadow's window has
SHADOW_FIELDS = ("versus", "pairs", "agreement", "prediction_diff", "score_diff",
                 "labeled_pairs", "versus_error", "shadow_error")


def _in_order(series: list[WindowSummary]) -> None:
    """Sort ``series`` oldest first: windows of time by start; count windows (after them)
    by number within a version, and versions' windows by time.

    A count window's start is its earliest event's time, which need not follow the
    numbers, so each version's windows keep their numbers' order; and each version
    numbers its own windows from 0, so numbers cannot order two versions' windows (the
    champion's after a promotion, or after a rollback to a version seen before). The
    key of a count window is the latest end of its version's windows up to its number
    (rising with the number), so the versions' windows interleave by time.

    >>> def w(version, index, end):
    ...     return WindowSummary(kind="kpi", model="m", model_version=version,
    ...                          window_start=end - 1, window_end=end, window_index=index,
    ...                          status="ok")
    >>> series = [w("v1", 7, 10), w("v3", 0, 20), w("v3", 1, 30), w("v1", 8, 40), w("v1", 6, 5)]
    >>> _in_order(series)
    >>> [(s.model_version, s.window_index) for s in series]
    [('v1', 6), ('v1', 7), ('v3', 0), ('v3', 1), ('v1', 8)]
    """
    latest: dict[str, int] = {}
    reached: dict[int, int] = {}
    for s in sorted((s for s in series if s.window_index is not None),
                    key=lambda s: (s.model_version, s.window_index)):
        latest[s.model_version] = max(latest.get(s.model_version, s.window_end), s.window_end)
        reached[id(s)] = latest[s.model_version]
    series.sort(key=lambda s: (False, s.window_start, "", 0) if s.window_index is None
                else (True, reached[id(s)], s.model_version, s.window_index))


class ModelState(BaseModel):
    """The policy agent's memory of one model."""

    model_config = ConfigDict(extra="forbid")

    # the deployment as the controller last reported it on `deployments`
    champion: str | None = None
    canary: str | None = None
    canary_weight: float = 0.0
    last_known_good: str | None = None
    # the champion before a blue-green switch, kept ready: the switched champion is
    # judged against its windows from before the switch, as a canary against the champion
    standby: str | None = None
    # recent windows, newest last, at most MAX_WINDOWS each
    drift: list[WindowSummary] = Field(default_factory=list)
    kpi: dict[str, list[WindowSummary]] = Field(default_factory=dict)
    # per KPI variant, the latest window_end of its windows let go past the bound: a
    # count window's comparison that may need one of them is not made (pairing.pooled)
    dropped_end: dict[str, int] = Field(default_factory=dict)
    # canary / challenger windows already judged (window starts), newest last
    canary_judged: list[int] = Field(default_factory=list)
    canary_healthy: int = 0
    challenger_judged: list[int] = Field(default_factory=list)
    challenger_wins: int = 0
    # count windows already judged: (version, window_index), newest last, at most
    # MAX_WINDOWS each (a new canary's numbers start again at 0: the version tells)
    canary_judged_counts: list[tuple[str, int]] = Field(default_factory=list)
    challenger_judged_counts: list[tuple[str, int]] = Field(default_factory=list)
    # poisoning guard
    poisoning: str = "ok"
    poisoning_reason: str = ""
    hold_issued: bool = False
    clean_since_retrain: int = 0
    # retraining and the brakes (event time, epoch ms)
    first_seen_ms: int | None = None
    last_retrain_ms: int | None = None
    issued: list[tuple[int, str]] = Field(default_factory=list)  # (at, type), last hour
    # the version a rollback was issued for, until `deployments` answers it: one
    # rollback per failing version, not one per revision of its KPI window
    rollback_pending: str | None = None
    # the first window start (epoch ms) that judges the canary serving now: windows
    # known when it was deployed were the previous canary's (a version deployed
    # again after its rollback is judged afresh, not on its old windows' revisions)
    canary_from_ms: int | None = None
    # the shadow deployed, its windows judged (starts, newest last) and healthy in a row
    shadow: str | None = None
    shadow_judged: list[int] = Field(default_factory=list)
    shadow_healthy: int = 0

    def remember(self, summary: WindowSummary) -> None:
        """Add or replace (a revision) the summary of a window."""
        series = self.drift if summary.kind == "drift" else self.kpi.setdefault(
            summary.variant, [])
        for i, old in enumerate(series):
            if old.window_start == summary.window_start and old.model_version == \
                    summary.model_version and old.window_index == summary.window_index:
                if summary.revision >= old.revision:
                    series[i] = summary
                return
        series.append(summary)
        _in_order(series)
        bound = MAX_POOLED if summary.kind == "kpi" and summary.variant == "champion" \
            and summary.window_index is not None else MAX_WINDOWS
        gone = series[:-bound]
        if gone and summary.kind == "kpi":
            self.dropped_end[summary.variant] = max(
                [self.dropped_end.get(summary.variant, 0), *(g.window_end for g in gone)])
        del series[:-bound]

    def window(self, variant: str, start: int, version: str | None) -> WindowSummary | None:
        for s in self.kpi.get(variant, []):
            if s.window_start == start and (version is None or s.model_version == version):
                return s
        return None
