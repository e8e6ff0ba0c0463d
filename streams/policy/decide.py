"""The policy agent's decisions: one report in, commands out (see schemas.rules).

``decide(state, event, rules)`` takes a model's ``ModelState`` and a drift, KPI,
poisoning or deployment event, and returns the new state and the commands the
event calls for, unsigned, with their evidence; the state given is left as it
was. Pure: the same events in the same order give the same commands with the
same ids, which is what makes a replay an audit. Commands held back by the brakes
(cooldown, hourly cap) are returned as ``held`` with the reason, for the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import takewhile
from typing import Any

from schemas.commands import Command, CommandType, DeploymentEvent
from schemas.reports import DriftReport, KpiReport, PoisoningReport
from schemas.rules import DecisionPolicy
from streams.policy.commands import command_id
from streams.policy.pairing import Pool, affected, pooled
from streams.policy.state import MAX_WINDOWS, ModelState, WindowSummary, epoch_ms
from streams.policy.stats import worse_than

HOUR_MS = 3_600_000

Event = DriftReport | KpiReport | PoisoningReport | DeploymentEvent


@dataclass
class Decisions:
    state: ModelState  # the model's state after the event
    commands: list[Command] = field(default_factory=list)
    held: list[str] = field(default_factory=list)  # decisions the brakes held back, in words


def summarise_drift(report: DriftReport) -> WindowSummary:
    return WindowSummary(
        kind="drift", model=report.model, model_version=report.model_version,
        window_start=epoch_ms(report.window_start), window_end=epoch_ms(report.window_end),
        window_index=report.window_index,
        status=report.status, n=report.n, why=report.drifted_features[:10],
    )


def _shadow_fields(report: KpiReport, champion: str | None) -> dict[str, Any]:
    """A shadow report's comparison with ``champion`` (else with the version it paired
    most requests with), as WindowSummary fields; none for other reports."""
    if not report.shadow:
        return {}
    c = next((c for c in report.shadow if c.versus == champion), None) or max(
        report.shadow, key=lambda c: (c.pairs, c.versus))
    classification = c.agreement is not None or "accuracy" in c.served_metrics
    key = "errors" if classification else "mae"
    return {
        "versus": c.versus, "pairs": c.pairs, "agreement": c.agreement,
        "prediction_diff": c.prediction_mean_abs_diff, "score_diff": c.score_mean_abs_diff,
        "labeled_pairs": c.labeled_pairs, "versus_error": c.served_metrics.get(key),
        "shadow_error": c.shadow_metrics.get(key),
    }


def summarise_kpi(report: KpiReport, champion: str | None = None) -> WindowSummary:
    accuracy = report.metrics.get("accuracy")
    errors = None if accuracy is None else round((1.0 - accuracy) * report.n_labeled)
    return WindowSummary(
        kind="kpi", model=report.model, model_version=report.model_version,
        variant=report.variant, window_start=epoch_ms(report.window_start),
        window_end=epoch_ms(report.window_end), window_index=report.window_index,
        revision=report.revision, status=report.status,
        n=report.n_predictions, n_labeled=report.n_labeled, errors=errors,
        error_rate=report.metrics.get("error_rate"),
        latency_p99_ms=report.metrics.get("latency_p99_ms"),
        concept_drift=report.concept_drift, why=report.breaches[:10],
        estimated=report.estimated, **_shadow_fields(report, champion),
    )


def _streak(series: list[WindowSummary], status: str, after_ms: int | None) -> list[WindowSummary]:
    """The newest windows in a row (contiguous in event time, count windows: numbered
    one after the other) with ``status``."""
    run: list[WindowSummary] = []
    for s in reversed(series):
        if len(run) == MAX_WINDOWS:  # the champion keeps more count windows (MAX_POOLED)
            break
        if s.status != status or (after_ms is not None and s.window_end <= after_ms):
            break
        if run and (
            (s.window_index + 1, s.model_version)
            != (run[-1].window_index, run[-1].model_version)
            if s.window_index is not None and run[-1].window_index is not None
            else s.window_end != run[-1].window_start
        ):
            break
        run.append(s)
    return run


class _Decider:
    def __init__(self, state: ModelState, rules: DecisionPolicy, model: str) -> None:
        self.state, self.rules, self.model = state, rules, model
        self.out = Decisions(state)

    # -- issuing -----------------------------------------------------------
    def issue(
        self, type_: CommandType, at_ms: int, reason: str, evidence: list[WindowSummary],
        *, from_version: str | None = None, to_version: str | None = None,
        weight: float | None = None,
    ) -> bool:
        if type_ == "rollback" and from_version is not None \
                and self.state.rollback_pending == from_version:
            # Issued already and not yet answered on `deployments`: each new revision of
            # the same evidence (late labels, the KPI timer) would be another command
            # for the controller to refuse.
            self.out.held.append(f"rollback of {self.model} {from_version} held back: one "
                                 f"was issued and the controller has not answered yet "
                                 f"({reason})")
            return False
        held = self._brake(type_, at_ms)
        if held:
            self.out.held.append(f"{type_} of {self.model} held back: {held} ({reason})")
            return False
        proof = [e.evidence() for e in evidence]
        cid = command_id(type_, self.model, from_version=from_version, to_version=to_version,
                         canary_weight=weight, evidence=proof)
        self.out.commands.append(Command(
            command_id=cid, type=type_, model=self.model, from_version=from_version,
            to_version=to_version, canary_weight=weight, reason=reason, evidence=proof,
            approval_required=self.rules.needs_approval, issued_by="policy",
            issued_at=datetime.fromtimestamp(at_ms / 1000, tz=UTC),
        ))
        self.state.issued.append((at_ms, type_))
        if type_ == "rollback":
            self.state.rollback_pending = from_version
        return True

    def _brake(self, type_: str, at_ms: int) -> str:
        """Why a command of ``type_`` may not go out now; empty if it may.

        Rollbacks are never held back: they only ever return to a version that
        was good, and holding one back keeps a failing model serving.
        """
        issued = [(t, k) for t, k in self.state.issued if t > at_ms - HOUR_MS]
        self.state.issued = issued[-self.rules.max_commands_per_hour:]
        if type_ in ("rollback", "hold"):
            return ""
        if len(issued) >= self.rules.max_commands_per_hour:
            return (f"{len(issued)} commands in the last hour, the cap is "
                    f"{self.rules.max_commands_per_hour}")
        last = max((t for t, k in issued if k == type_), default=None)
        if last is not None and at_ms - last < self.rules.cooldown:
            return (f"the last {type_} was {(at_ms - last) / 1000:.0f} s ago, the cooldown is "
                    f"{self.rules.cooldown / 1000:.0f} s")
        return ""

    # -- retraining --------------------------------------------------------
    def retrain(self, at_ms: int, reason: str, evidence: list[WindowSummary]) -> None:
        state = self.state
        # the version being retrained: the champion, as deployed or as reported
        version = state.champion or evidence[-1].model_version or None
        if state.poisoning == "campaign":
            if not state.hold_issued:
                state.hold_issued = self.issue(
                    "hold", at_ms, f"retrain blocked while the poisoning guard reports a "
                    f"campaign ({state.poisoning_reason}); it was due: {reason}", evidence,
                    from_version=version)
            return
        if self.issue("retrain", at_ms, reason, evidence, from_version=version):
            state.last_retrain_ms = at_ms
            state.clean_since_retrain = 0

    def check_schedule(self, at_ms: int, evidence: list[WindowSummary]) -> None:
        schedule, state = self.rules.retrain.schedule, self.state
        if state.first_seen_ms is None:
            state.first_seen_ms = at_ms
        since = state.last_retrain_ms if state.last_retrain_ms is not None else state.first_seen_ms
        if schedule and at_ms - since >= schedule:
            self.retrain(at_ms, f"scheduled: no retrain for {(at_ms - since) / 3.6e6:.1f} h "
                         f"(schedule {schedule / 3.6e6:g} h)", evidence)

    # -- events ------------------------------------------------------------
    def on_drift(self, report: DriftReport) -> None:
        state, rules = self.state, self.rules.retrain
        champion = state.champion or report.model_version
        if report.model_version != champion:
            return  # drift of a canary's traffic is judged by its KPIs
        summary = summarise_drift(report)
        state.remember(summary)
        need = min(rules.drift_windows, MAX_WINDOWS)
        run = _streak(state.drift, "drift", state.last_retrain_ms)
        if need and len(run) >= need:
            features = ", ".join(summary.why[:5]) or "the multivariate signal"
            self.retrain(summary.window_end,
                         f"sustained drift of {champion}: {len(run)} drift windows in a row "
                         f"(policy: {need}); drifting: {features}", list(reversed(run)))
            return
        self.check_schedule(summary.window_end, [summary])

    def on_kpi(self, report: KpiReport) -> None:
        state = self.state
        summary = summarise_kpi(report, state.champion)
        role = report.variant
        if role == "champion" and state.champion not in (None, report.model_version):
            return
        if role == "canary" and state.canary != report.model_version and (
                state.canary is not None or state.champion is not None):
            # a report of a canary that was already rolled back or promoted (its late
            # revisions keep coming), or of another than the one serving now; with no
            # deployment seen yet the report's own variant is all there is to go by
            return
        if role == "canary" and state.canary_from_ms is not None \
                and summary.window_start < state.canary_from_ms:
            return  # a window of this version's earlier time as canary (late revisions)
        if role == "shadow" and state.shadow != report.model_version and (
                state.shadow is not None or state.champion is not None):
            return  # a shadow stopped or moved on (its late revisions), or another one
        state.remember(summary)
        if role == "champion":
            self.champion_kpi(summary)
            self.compare_canary(summary.window_start)
            self.compare_challenger(summary.window_start)
            self.count_windows_beside(summary)
        elif role == "canary":
            if not self.canary_serving(summary):
                if summary.window_index is None:
                    self.compare_canary(summary.window_start)
                elif kept := self._kept(summary):
                    self.compare_canary_count(kept)
        elif role == "challenger":
            if summary.window_index is None:
                self.compare_challenger(summary.window_start)
            elif kept := self._kept(summary):
                self.compare_challenger_count(kept)
        elif role == "shadow":
            self.judge_shadow(summary)

    def serving_problem(self, s: WindowSummary) -> str:
        limits = self.rules.rollback
        if limits.max_error_rate is not None and s.error_rate is not None \
                and s.error_rate > limits.max_error_rate:
            return f"serving error rate {s.error_rate:.4f} over the limit {limits.max_error_rate}"
        if limits.max_latency_p99_ms is not None and s.latency_p99_ms is not None \
                and s.latency_p99_ms > limits.max_latency_p99_ms:
            return (f"p99 latency {s.latency_p99_ms:.1f} ms over the limit "
                    f"{limits.max_latency_p99_ms:g} ms")
        return ""

    def champion_kpi(self, s: WindowSummary) -> None:
        state, rules = self.state, self.rules.retrain
        problem = self.serving_problem(s)
        if problem and state.last_known_good not in (None, s.model_version):
            self.issue("rollback", s.window_end,
                       f"champion {s.model_version}: {problem}; back to the last known good "
                       f"{state.last_known_good}", [s], from_version=s.model_version,
                       to_version=state.last_known_good)
            return
        if self.compare_switched(s):
            return
        if s.concept_drift and rules.on_concept_drift and (
                state.last_retrain_ms is None or s.window_end > state.last_retrain_ms):
            self.retrain(s.window_end, f"concept drift on {s.model_version}: the error stream "
                         "changed (river detector) in this window", [s])
            return
        need = min(rules.kpi_breach_windows, MAX_WINDOWS)
        run = _streak(state.kpi.get("champion", []), "breach", state.last_retrain_ms)
        if not rules.on_estimated_breach:  # estimated breaches only alert
            run = list(takewhile(lambda w: not w.estimated, run))
        if need and len(run) >= need:
            estimated = sum(w.estimated for w in run)
            on = (f" ({estimated} of them on estimates from scores, before labels: an "
                  "estimate cannot see concept drift)" if estimated else "")
            self.retrain(s.window_end, f"KPI targets of {s.model_version} missed in {len(run)} "
                         f"windows in a row (policy: {need}){on}: {'; '.join(s.why[:3])}",
                         list(reversed(run)))
            return
        self.check_schedule(s.window_end, [s])

    def compare_switched(self, s: WindowSummary) -> bool:
        """After a blue-green switch, the champion is judged as a canary is, but against
        the standby's newest labeled window from before the switch (nothing else served
        beside it): worse by the canary's test, it is rolled back, which switches all
        traffic back to the standby. True when it was found worse (a rollback issued,
        or one still unanswered)."""
        state, limits = self.state, self.rules.rollback
        if state.standby is None or s.model_version != state.champion or s.errors is None \
                or s.n_labeled < limits.min_labeled:
            return False
        base = next((w for w in reversed(state.kpi.get("champion", []))
                     if w.model_version == state.standby and w.errors is not None
                     and w.n_labeled >= limits.min_labeled), None)
        if base is None:
            return False
        test = worse_than(s.errors, s.n_labeled, base.errors or 0, base.n_labeled,
                          margin=limits.margin, alpha=limits.alpha)
        if not test.worse:
            return False
        self.issue("rollback", s.window_end,
                   f"switched champion {s.model_version} worse than the standby "
                   f"{state.standby} before the switch: " +
                   test.describe(s.model_version, base.model_version, limits.margin) +
                   f"; switch back to {state.standby}", [s, base],
                   from_version=s.model_version, to_version=state.standby)
        return True  # a rollback issued, or one awaiting its answer: nothing else to decide

    def canary_serving(self, s: WindowSummary) -> bool:
        problem = self.serving_problem(s)
        if problem:
            self.rollback_canary(s.window_end, f"canary {s.model_version}: {problem}", [s])
        return bool(problem)

    def rollback_canary(self, at_ms: int, reason: str, evidence: list[WindowSummary]) -> None:
        state = self.state
        if self.issue("rollback", at_ms, reason, evidence, from_version=state.canary or
                      evidence[0].model_version, to_version=state.champion):
            state.canary_healthy = 0

    def _pair(self, variant: str, start: int) -> tuple[WindowSummary, WindowSummary] | None:
        """The variant's and the champion's summaries of one window, both with enough labels."""
        state, need = self.state, self.rules.rollback.min_labeled
        other = self.state.window(variant, start, state.canary if variant == "canary" else None)
        champ = self.state.window("champion", start, state.champion)
        if other is None or champ is None or other.window_index is not None:
            return None  # a count window pairs by overlap (compare_*_count)
        if other.errors is None or champ.errors is None:
            return None
        if other.n_labeled < need or champ.n_labeled < need:
            return None
        return other, champ

    def compare_canary(self, start: int) -> None:
        if self.state.canary is None:
            return
        pair = self._pair("canary", start)
        if pair is not None:
            canary, champ = pair
            self.judge_canary(canary, Pool((champ,), champ.errors or 0, champ.n_labeled))

    # -- count windows: pooled champion windows (streams.policy.pairing) ----
    def _pool(self, s: WindowSummary, version: str | None) -> Pool | None:
        """The champion's windows pooled against ``s``'s count window, both sides with
        enough labels; None while incomplete (a held line when it cannot be made)."""
        state, need = self.state, self.rules.rollback.min_labeled
        if s.errors is None or s.n_labeled < need:
            return None
        pool, why = pooled(state.kpi.get("champion", []), state.dropped_end.get("champion"),
                           s, version)
        if why and not self._judged(s):
            self.out.held.append(why)
        if pool is None or pool.n_labeled < need:
            return None
        return pool

    def _kept(self, s: WindowSummary) -> WindowSummary | None:
        """The state's summary of ``s``'s window: its newest revision (a late older one is
        not judged), None once the window was let go (as a window of time then finds no
        pair)."""
        return next((k for k in self.state.kpi.get(s.variant, [])
                     if (k.window_index, k.window_start, k.model_version)
                     == (s.window_index, s.window_start, s.model_version)), None)

    def _judged(self, s: WindowSummary) -> bool:
        if s.window_index is None:
            return s.window_start in getattr(self.state, f"{s.variant}_judged")
        return (s.model_version, s.window_index) in getattr(
            self.state, f"{s.variant}_judged_counts")

    def _mark_judged(self, s: WindowSummary) -> None:
        """Judged once: a revision of the window does not count it again."""
        key: int | tuple[str, int]
        if s.window_index is None:
            name, key = f"{s.variant}_judged", s.window_start
        else:
            name, key = f"{s.variant}_judged_counts", (s.model_version, s.window_index)
        setattr(self.state, name, [*getattr(self.state, name), key][-MAX_WINDOWS:])

    def compare_canary_count(self, s: WindowSummary) -> None:
        if self.state.canary is None:
            return
        pool = self._pool(s, self.state.champion)
        if pool is not None:
            self.judge_canary(s, pool)

    def compare_challenger_count(self, s: WindowSummary) -> None:
        if self._judged(s):
            return
        pool = self._pool(s, self.state.champion)
        if pool is not None:
            self.judge_challenger(s, pool)

    def count_windows_beside(self, champ: WindowSummary) -> None:
        """A champion window's report may complete or change the pool of the canary's and
        challenger's count windows beside it: those are compared again, oldest first."""
        state = self.state
        series = state.kpi.get("champion", [])
        for s in list(state.kpi.get("canary", [])):
            if s.window_index is not None and s.model_version == state.canary and (
                    state.canary_from_ms is None or s.window_start >= state.canary_from_ms) \
                    and affected(s, champ, series, self._judged(s)):
                self.compare_canary_count(s)
        for s in list(state.kpi.get("challenger", [])):
            if s.window_index is not None and affected(s, champ, series, self._judged(s)):
                self.compare_challenger_count(s)

    def judge_canary(self, canary: WindowSummary, pool: Pool) -> None:
        """The canary's window against the champion's side: rolled back if worse (on any
        revision), else counted healthy once; the reason states the numbers, pooled ones
        for a count window."""
        state, rules = self.state, self.rules
        test = worse_than(canary.errors or 0, canary.n_labeled, pool.errors,
                          pool.n_labeled, margin=rules.rollback.margin,
                          alpha=rules.rollback.alpha)
        champion = pool.windows[0].model_version
        evidence = [canary, *pool.windows]
        numbers = test.describe(canary.model_version, champion, rules.rollback.margin)
        at = canary.window_end
        if canary.window_index is not None:
            numbers += "; " + pool.describe(canary)
            at = max(w.window_end for w in evidence)
        if test.worse:
            self.rollback_canary(at, "canary worse than the champion: " + numbers, evidence)
            return
        if self._judged(canary) or canary.status == "breach":
            return
        self._mark_judged(canary)
        state.canary_healthy += 1
        if state.canary_healthy < rules.delivery.healthy_windows:
            return
        steps = rules.delivery.canary_steps
        higher = [w for w in steps if w > state.canary_weight + 1e-9]
        why = (f"canary {canary.model_version} healthy for {state.canary_healthy} window(s) at "
               f"weight {state.canary_weight:g} and not worse than the champion: " + numbers)
        if higher and higher[0] < 1.0:
            if self.issue("set_canary_weight", at, why, evidence,
                          to_version=canary.model_version, weight=higher[0]):
                state.canary_healthy = 0
        elif self.issue("promote", at, why, evidence,
                        from_version=state.champion, to_version=canary.model_version):
            state.canary_healthy = 0

    def compare_challenger(self, start: int) -> None:
        pair = self._pair("challenger", start)
        if pair is None or start in self.state.challenger_judged:
            return
        challenger, champ = pair
        self.judge_challenger(challenger, Pool((champ,), champ.errors or 0, champ.n_labeled))

    def judge_challenger(self, challenger: WindowSummary, pool: Pool) -> None:
        """One window of the challenger against the champion's side, judged once."""
        state, rules = self.state, self.rules
        self._mark_judged(challenger)
        champion = pool.windows[0].model_version
        test = worse_than(pool.errors, pool.n_labeled, challenger.errors or 0,
                          challenger.n_labeled, margin=0.0, alpha=rules.rollback.alpha)
        state.challenger_wins = state.challenger_wins + 1 if test.worse else 0
        evidence = [challenger, *pool.windows]
        numbers = test.describe(champion, challenger.model_version, 0.0)
        at = challenger.window_end
        if challenger.window_index is not None:
            numbers += "; " + pool.describe(challenger)
            at = max(w.window_end for w in evidence)
        if state.challenger_wins >= rules.delivery.challenger_windows and self.issue(
                "promote", at,
                f"challenger {challenger.model_version} beat the champion in "
                f"{state.challenger_wins} windows in a row: " + numbers,
                evidence, from_version=state.champion,
                to_version=challenger.model_version):
            state.challenger_wins = 0

    def shadow_problem(self, s: WindowSummary) -> str:
        """Why the shadow's window is not healthy, with the numbers; empty if it is."""
        rules = self.rules.shadow
        if s.status == "breach":
            return f"its KPI window is a breach: {'; '.join(s.why[:3])}"
        problem = self.serving_problem(s)
        if problem:
            return problem
        if s.agreement is not None and s.agreement < rules.min_agreement:
            return f"agreement {s.agreement:.4f} with {s.versus} below {rules.min_agreement:g}"
        if rules.max_prediction_diff is not None and s.prediction_diff is not None \
                and s.prediction_diff > rules.max_prediction_diff:
            return (f"mean |prediction difference| {s.prediction_diff:.4g} from {s.versus} over "
                    f"{rules.max_prediction_diff:g}")
        if rules.max_score_diff is not None and s.score_diff is not None \
                and s.score_diff > rules.max_score_diff:
            return (f"mean |score difference| {s.score_diff:.4f} from {s.versus} over "
                    f"{rules.max_score_diff:g}")
        if rules.min_labeled_pairs:
            return self._shadow_worse(s)
        return ""

    def _shadow_worse(self, s: WindowSummary) -> str:
        """The shadow against the champion on the same labeled requests: the canary's
        test for classification (unpaired, so it calls fewer shadows worse than a paired
        test would); for regression its mae above the champion's by more than the
        margin, relative."""
        limits = self.rules.rollback
        n, mine, theirs = s.labeled_pairs or 0, s.shadow_error, s.versus_error
        if mine is None or theirs is None:
            return "no labeled pairs to compare"
        if s.agreement is not None or s.prediction_diff is None:  # classification
            test = worse_than(round(mine), n, round(theirs), n, margin=limits.margin,
                              alpha=limits.alpha)
            if test.worse:
                return "worse than the champion on the same requests: " + test.describe(
                    s.model_version, s.versus or "", limits.margin)
            return ""
        if mine > theirs * (1 + limits.margin):
            return (f"mae {mine:.4g} on the same requests above {s.versus}'s {theirs:.4g} by more "
                    f"than the margin {limits.margin:g}")
        return ""

    def judge_shadow(self, s: WindowSummary) -> None:
        """A shadow's window, once it paired ``min_pairs`` requests (and, with
        ``min_labeled_pairs``, that many were labeled): healthy or not, judged once;
        ``healthy_windows`` healthy ones in a row make it the canary."""
        state, rules = self.state, self.rules.shadow
        if not rules.healthy_windows or s.pairs is None or s.pairs < rules.min_pairs:
            return
        if rules.min_labeled_pairs and (s.labeled_pairs or 0) < rules.min_labeled_pairs:
            return  # not judged yet: its labels are still coming
        if s.window_start in state.shadow_judged:
            return
        state.shadow_judged = ([*state.shadow_judged, s.window_start])[-MAX_WINDOWS:]
        problem = self.shadow_problem(s)
        if problem:
            state.shadow_healthy = 0
            self.out.held.append(f"shadow {s.model_version} not healthy in the window from "
                                 f"{s.window_start}: {problem}")
            return
        state.shadow_healthy += 1
        if state.shadow_healthy < rules.healthy_windows:
            return
        if state.canary is not None:
            self.out.held.append(f"canary of shadow {s.model_version} held back: "
                                 f"{state.canary} is the canary now")
            return
        labeled = (f", on {s.labeled_pairs} labeled pairs errors {s.shadow_error:.4g} vs "
                   f"{s.versus_error:.4g}" if s.labeled_pairs and s.shadow_error is not None
                   and s.versus_error is not None else "")
        agree = (f"agreement {s.agreement:.4f}" if s.agreement is not None else
                 f"mean |prediction difference| {s.prediction_diff:.4g}"
                 if s.prediction_diff is not None else "no readable prediction pairs")
        score = (f", mean |score difference| {s.score_diff:.4f}" if s.score_diff is not None
                 else "")
        why = (f"shadow {s.model_version} healthy for {state.shadow_healthy} window(s) in a "
               f"row (policy: {rules.healthy_windows}) beside {s.versus}: {s.pairs} paired "
               f"requests, {agree}{score}{labeled}; KPI status {s.status}")
        evidence = [w for w in state.kpi.get("shadow", [])
                    if w.model_version == s.model_version
                    and w.window_start in state.shadow_judged][-state.shadow_healthy:]
        if self.issue("canary", s.window_end, why, evidence or [s],
                      from_version=state.champion, to_version=s.model_version,
                      weight=rules.canary_weight):
            state.shadow_healthy = 0

    def on_poisoning(self, report: PoisoningReport) -> None:
        state = self.state
        state.poisoning, state.poisoning_reason = report.status, report.reason
        if report.status != "campaign":
            state.hold_issued = False
        state.clean_since_retrain += sum(s.passed for s in report.sources.values())
        need = self.rules.retrain.new_clean_labels
        if need and state.clean_since_retrain >= need:  # during a campaign: a hold
            summary = WindowSummary(
                kind="poisoning", model=report.model, model_version=state.champion or "",
                variant="training-data", window_start=epoch_ms(report.window_start),
                window_end=epoch_ms(report.window_end), status=report.status,
                n=state.clean_since_retrain)
            self.retrain(summary.window_end, f"{state.clean_since_retrain} new clean labeled "
                         f"records since the last retrain (policy: {need})", [summary])

    def on_deployment(self, event: DeploymentEvent) -> None:
        state = self.state
        if event.action == "rollback" and event.status in ("applied", "rejected"):
            state.rollback_pending = None  # answered: new evidence may call for another
        if event.status != "applied":
            return
        new = event.state
        if new.canary != state.canary or new.canary_weight != state.canary_weight:
            state.canary_healthy = 0
        if new.canary != state.canary:
            state.canary_judged_counts = []  # a canary deployed again counts from 0 again
        if new.canary is not None and new.canary != state.canary:
            known = [s.window_start for s in state.kpi.get("canary", [])]
            state.canary_from_ms = max(known) + 1 if known else None
        if new.champion != state.champion:
            state.challenger_wins = 0
        if new.shadow != state.shadow or new.champion != state.champion:
            state.shadow_healthy = 0
            state.shadow_judged = []
        state.shadow = new.shadow
        state.champion, state.canary = new.champion, new.canary
        state.canary_weight, state.last_known_good = new.canary_weight, new.last_known_good
        state.standby = new.standby


def decide(state: ModelState, event: Event, rules: DecisionPolicy) -> Decisions:
    """The state after ``event`` and the commands it calls for (unsigned); ``state``
    itself is not changed (the decider works on a copy)."""
    decider = _Decider(state.model_copy(deep=True), rules, event.model)
    if isinstance(event, DriftReport):
        decider.on_drift(event)
    elif isinstance(event, KpiReport):
        decider.on_kpi(event)
    elif isinstance(event, PoisoningReport):
        decider.on_poisoning(event)
    else:
        decider.on_deployment(event)
    return decider.out
