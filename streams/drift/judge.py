"""Judging a window: when a feature or the multivariate signal is flagged, and when a
flag becomes drift.

A feature is flagged when its PSI is above what sampling noise explains for the
reference's and the window's sizes (``psi_noise_threshold`` at the window's share
of the false-alarm rate, Bonferroni over the features judged together) *and* at
least ``psi_warn``, the smallest shift worth an alarm; the multivariate signal when
its mean reconstruction error is outside noise, above or below its baseline
(a two-sided test at the same share), and moves at least ``multivariate_warn``
either way. Events with values beyond the reference's limits are counted at the
limit and named in the multivariate reason, flagged or not.
A flag is ``warn``, and ``drift`` once it holds ``consecutive`` windows or is
large at once (``psi_drift``, ``multivariate_drift``). ``streaks`` (in the
version's state) counts the windows in a row each was flagged. Every flag comes
with its reason in words.
"""

from __future__ import annotations

from schemas.policy import DriftPolicy, FeatureThresholds
from schemas.reports import DriftStatus, FeatureDrift, MultivariateDrift
from streams.batch import Kind
from streams.drift import multivariate as mv
from streams.drift.compare import Comparison
from streams.drift.psi import psi_noise_threshold
from streams.drift.state import MV_STREAK


def judge_feature(
    policy: DriftPolicy,
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
    p = policy
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
            status, when = hysteresis(
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


def judge_multivariate(
    policy: DriftPolicy, pca: mv.PcaReference, sums: mv.ErrorSums, alpha: float,
    streaks: dict[str, int],
) -> MultivariateDrift:
    """Flag when the mean error is outside noise (either way) and moves at least the
    relative floor; drift when it holds ``consecutive`` windows or moves
    ``multivariate_drift`` from the baseline.

    The floor plays the part ``psi_warn`` plays for a feature: a large window
    makes a tiny change significant, not important. A fall of the error is as
    much a change of the joint distribution as a rise: the features vary
    together more tightly than in the reference (stronger correlations, less
    spread off the main directions).
    """
    p = policy
    t = mv.compare_errors(pca, sums, alpha=alpha)
    status: DriftStatus = "ok"
    reasons: list[str] = []
    if t.n >= p.min_window_events:
        flagged = t.beats_noise() and abs(t.relative_change) >= p.multivariate_warn
        streaks[MV_STREAK] = streaks.get(MV_STREAK, 0) + 1 if flagged else 0
        if flagged:
            rise = t.relative_change > 0
            bound = t.noise if rise else t.noise_low
            noise = (
                f"{'above' if rise else 'below'} noise ({bound:.4f} for {t.n} events at a "
                f"false-alarm rate of {p.false_alarm_rate:g} per window; z = {t.z:.1f})"
                if bound is not None and t.z is not None
                else "unlike noise (every event of the window has the same error)"
            )
            why = (
                f"the reconstruction error of {mv.describe_features(pca)} from "
                f"{len(pca['components'])} principal components is {t.error:.4f}, "
                f"{abs(t.relative_change):.0%} {'above' if rise else 'below'} its baseline "
                f"{t.baseline:.4f}: {noise} and beyond the {p.multivariate_warn:.0%} floor"
            )
            status, when = hysteresis(
                streaks[MV_STREAK], abs(t.relative_change) >= p.multivariate_drift,
                f"at least {p.multivariate_drift:.0%} from it", p.consecutive)
            meaning = (
                "the features no longer vary together as in the reference (changed "
                "correlations, or values off the reference's main directions)"
                if rise
                else "the features vary together more tightly than in the reference "
                "(stronger correlations, or less spread off its main directions)"
            )
            reasons.append(f"{why}{when}; {meaning}")
    if t.beyond:
        reasons.append(extreme_reason(pca, t, status))
    return MultivariateDrift(
        n=t.n,
        reconstruction_error=t.error,
        baseline=t.baseline,
        relative_change=t.relative_change,
        z=t.z,
        threshold=round(t.noise, 6) if t.noise is not None else None,
        threshold_low=round(t.noise_low, 6) if t.noise_low is not None else None,
        components=len(pca["components"]),
        features_used=list(pca["names"]),
        categorical_features=[n for n in pca["names"] if n in pca.get("categories", {})],
        beyond_limits=t.beyond,
        farthest_sd=round(t.farthest, 3) if t.where >= 0 else None,
        farthest_feature=pca["names"][t.where] if t.where >= 0 else None,
        max_event_error=mv.max_error(pca),
        streak=streaks.get(MV_STREAK, 0),
        status=status,
        drifted=status == "drift",
        reason="; ".join(reasons),
    )


def extreme_reason(pca: mv.PcaReference, t: mv.ErrorTest, status: DriftStatus) -> str:
    """Events with values beyond the reference's limits, in words: how many, how far,
    in which feature; they were clipped, so they cannot make the verdict."""
    many = t.beyond > 1
    feature = pca["names"][t.where] if t.where >= 0 else "?"
    bound = mv.max_error(pca)
    counted = (
        f"each counted at its limit (an event's error is at most {bound:.4g})"
        if bound is not None
        else "each counted at its limit"
    )
    verdict = (
        "not a shift of the distribution"
        if status == "ok"
        else "they do not make the flag: the flag is the other events' doing"
    )
    return (
        f"{t.beyond} event{'s' if many else ''} beyond the reference's limits "
        f"({mv.CLIP_SDS:g} robust sds from a typical value), the farthest {t.farthest:.0f} sd "
        f"out in {feature}; {counted}; {verdict}"
    )


def hysteresis(
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
