"""KPI bands from the spread of the reference's own windows (``kpi.reference_bands``).

A fixed target (``roc_auc: {min: 0.8}``) needs someone to know what 0.8 means for
this model; a band drawn from the reference does not. As NannyML does it
(``StandardDeviationThreshold`` on reference chunks), ``driftline reference
build`` cuts the reference's labeled rows, in file order, into consecutive
windows, computes each metric on every window with the KPI agent's own
accumulators (``streams.kpi.window``, so a reference metric and a live one are
the same computation), and keeps each metric's mean and standard deviation
(``schemas.reference.PerformanceBands``: three numbers per metric). A live
window is then held to ``mean -/+ std x sd`` (the policy's ``std``, 3 by
default), clipped to the metric's range (``schemas.kpi_metrics``).

Decisions:

* **Window size in events, not time.** A reference file need not have times,
  and what sets a metric's spread is how many labels a window holds, not how
  long it lasts. So the policy states ``window_events``, about the labels of a
  live KPI window; without it the reference is cut into ``windows`` (10, as
  NannyML's default chunker) windows. The sample standard deviation (ddof 1) is
  used: with 10 windows NannyML's ddof 0 understates the spread by 5 %.
* **A prediction interval, not mean -/+ 3 sd.** The mean and the standard
  deviation are themselves estimated from a few windows (10 by default): the
  standard deviation of 10 values is below 0.6 of the true one in 1 reference
  of 20. So the half-width is the prediction interval of one more window at the
  normal coverage of ``std`` (3: 99.73 %), ``t(windows - 1) x sqrt(1 + 1 /
  windows)`` standard deviations (``multiplier``: 4.29 for 10 windows, 3.53 for
  20, 3.01 for 1,000). Measured (tests/streams/kpi/test_bands.py): a stable
  classifier's windows of 2,000 labels against bands from 20 reference windows
  on five metrics breached in 15 of 500 windows with NannyML's mean -/+ 3 sd,
  5 of 500 with the prediction interval.
* **Fewer labels, a wider band.** A metric's spread shrinks about as
  ``1 / sqrt(labels)``. A live window whose labels are still coming in (its
  first revisions) would breach a band measured on fuller windows by chance, so
  the band is widened by ``sqrt(window_events / labels)`` when the window has
  fewer labels than a reference window; never narrowed when it has more (the
  reference's own spread, whatever its cause, stays the floor).
* **The worse side only**, by default: a band that flags an AUC *above* the
  reference's would call a retrain for a better model. ``sides: both`` judges
  either side, as NannyML does (a sudden improvement can be a labelling fault);
  rates with no better side (``positive_rate``, ``label_positive_rate``) are
  always judged both ways.
* **Rare positives.** Reference windows with fewer than ``min_positives``
  predicted (precision), actual (recall) or either (f1) positives are left out
  of that metric's spread, as such live windows are not judged
  (``streams.kpi.thresholds``).
* **Bounded.** At most ``MAX_WINDOWS`` windows are measured (the first ones);
  a metric defined on fewer than ``MIN_WINDOWS`` of them gets no band.

Cost at build: the KPI accumulators folded over the labeled rows twice (once to
find the usable rows, once window by window), about 7 µs a row: 0.25 s for 40,000
rows, 1.4 s for 200,000 (2 shared cores).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from schemas.kpi_metrics import BANDED_METRICS, METRICS, WORSE
from schemas.policy import KpiPolicy
from schemas.reference import MetricSpread, PerformanceBands
from schemas.reports import KpiThreshold, ReferenceBandsInfo
from streams.kpi.labels import canonical

#: A metric defined on fewer reference windows gets no band: a standard deviation of
#: four values is a guess.
MIN_WINDOWS = 5
#: Reference windows measured at most (the first ones of the file).
MAX_WINDOWS = 1000
#: Rows a reference window needs at least (as ``ReferenceBands.window_events``).
MIN_WINDOW_EVENTS = 50


def fit(
    policy: KpiPolicy,
    predictions: Sequence[Any],
    labels: Sequence[Any],
    scores: Sequence[Any] | None = None,
) -> tuple[PerformanceBands | None, str]:
    """Each banded metric's spread over consecutive windows of the rows with a usable
    label and prediction, in the given order; or None and why.

    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 3000)
    >>> p = np.where(rng.random(3000) < 0.8, y, 1 - y)
    >>> bands, why = fit(KpiPolicy(), p.tolist(), y.tolist())
    >>> bands.windows, bands.window_events, round(bands.metrics["accuracy"].mean, 2)
    (10, 300, 0.8)
    """
    from streams.kpi.window import KpiWindow  # the window kernel, not needed on import

    settings = policy.reference_bands
    kpi = KpiWindow(policy)
    n = len(predictions)
    s = list(scores) if scores is not None else [None] * n
    waiting = [
        {"v": "", "a": "champion", "t": 0, "p": p, "s": _score(v), "g": {}}
        for p, v in zip(predictions, s, strict=True)
    ]
    _, errors = kpi.add_labeled_columns(
        kpi.initialize(), waiting, list(labels), np.zeros(n, dtype=np.int64)  # type: ignore[arg-type]
    )
    usable = np.flatnonzero(np.isfinite(errors))
    windows = settings.windows if settings is not None else 10
    size = settings.window_events if settings is not None else None
    if size is None:
        size = usable.size // windows
    else:
        windows = min(usable.size // size, MAX_WINDOWS)
    if windows < MIN_WINDOWS or size < MIN_WINDOW_EVENTS:
        return None, (
            f"{usable.size} rows with a usable label and prediction make {windows} windows of "
            f"{size}; a band needs at least {MIN_WINDOWS} of at least {MIN_WINDOW_EVENTS}"
        )
    values: dict[str, list[float]] = {}
    for k in range(windows):
        rows = usable[k * size:(k + 1) * size].tolist()
        state, _ = kpi.add_labeled_columns(
            kpi.initialize(), [waiting[i] for i in rows], [labels[i] for i in rows],
            np.zeros(len(rows), dtype=np.int64),
        )
        quality = state["quality"]
        metrics = kpi.quality_metrics(quality)
        too_few = set(few_positives(quality, policy.min_positives))
        for name, value in metrics.items():
            if name in BANDED_METRICS and name not in too_few and math.isfinite(value):
                values.setdefault(name, []).append(float(value))
    spreads = {
        name: MetricSpread(mean=float(np.mean(v)), std=float(np.std(v, ddof=1)), windows=len(v))
        for name, v in sorted(values.items())
        if len(v) >= MIN_WINDOWS
    }
    if not spreads:
        return None, f"no metric was defined on {MIN_WINDOWS} of the {windows} reference windows"
    classification = policy.task == "classification"
    return PerformanceBands(
        task=policy.task,
        positive_label=policy.positive_label if classification else None,
        window_events=size,
        windows=windows,
        min_positives=policy.min_positives,
        metrics=spreads,
    ), ""


def few_positives(quality: Any, minimum: int) -> dict[str, str]:
    """Metrics a classification state has too few positives to judge: name -> why, e.g.
    ``{"precision": "7 predicted positives"}`` (empty for regression or ``minimum`` 0).

    >>> few_positives({"tp": 5, "fp": 2, "tn": 90, "fn": 40}, 30)
    {'precision': '7 predicted positives', 'f1': '7 predicted positives'}
    """
    if minimum <= 0 or "tp" not in quality:
        return {}
    predicted = quality["tp"] + quality["fp"]
    actual = quality["tp"] + quality["fn"]
    out = {}
    if predicted < minimum:
        out["precision"] = f"{predicted} predicted positives"
    if actual < minimum:
        out["recall"] = f"{actual} actual positives"
    if min(predicted, actual) < minimum:
        out["f1"] = (f"{predicted} predicted positives" if predicted <= actual
                     else f"{actual} actual positives")
    return out


def setting(
    policy: KpiPolicy, stored: bytes | None, *, version: str
) -> tuple[ReferenceBandsInfo | None, PerformanceBands | None]:
    """Whether the version's reference bands (``stored``: the profile's ``bands`` as JSON,
    ``b"null"`` for a profile without, None without a profile) apply under ``policy``, and
    the bands when they do; (None, None) when the policy asks for none.

    >>> from schemas.policy import ReferenceBands
    >>> info, _ = setting(KpiPolicy(reference_bands=ReferenceBands(metrics=["f1"])), None,
    ...                   version="v1")
    >>> info.applied, info.reason[:45]
    (False, 'no reference profile of v1 has been published')
    """
    settings = policy.reference_bands
    if settings is None:
        return None, None

    def not_applied(reason: str) -> tuple[ReferenceBandsInfo, None]:
        return ReferenceBandsInfo(applied=False, std=settings.std, reason=reason), None

    if stored is None:
        return not_applied(
            f"no reference profile of {version} has been published (driftline reference "
            "build with label and prediction columns draws the bands)"
        )
    if stored == b"null":
        return not_applied(
            f"the reference profile of {version} has no bands (built without label and "
            "prediction columns, with too few rows, without kpi.reference_bands in the policy, "
            "or before driftline drew bands): rebuild it"
        )
    bands = PerformanceBands.model_validate_json(stored)
    if bands.task != policy.task:
        return not_applied(f"{version}'s bands are for task {bands.task}, the policy's is "
                           f"{policy.task}: rebuild the reference")
    if bands.task == "classification" and canonical(bands.positive_label) != canonical(
            policy.positive_label):
        return not_applied(f"{version}'s bands count {bands.positive_label!r} as positive, the "
                           f"policy {policy.positive_label!r}: rebuild the reference")
    wanted = settings.window_events
    if wanted is not None and wanted != bands.window_events:
        return not_applied(f"{version}'s bands rest on windows of {bands.window_events} labels, "
                           f"the policy asks {wanted}: rebuild the reference")
    if wanted is None and settings.windows != bands.windows:
        return not_applied(f"{version}'s bands rest on {bands.windows} reference windows, the "
                           f"policy asks {settings.windows}: rebuild the reference")
    return ReferenceBandsInfo(
        applied=True, std=settings.std, window_events=bands.window_events, windows=bands.windows
    ), bands


def band(
    policy: KpiPolicy, bands: PerformanceBands, name: str, labeled: int
) -> KpiThreshold | None:
    """The band ``name`` is held to on a window of ``labeled`` labels (not yet judged), or
    None when the reference has no spread for it.

    >>> from schemas.policy import ReferenceBands
    >>> policy = KpiPolicy(reference_bands=ReferenceBands(metrics=["roc_auc"]))
    >>> stored = PerformanceBands(task="classification", positive_label=1, window_events=2000,
    ...     windows=10, min_positives=30,
    ...     metrics={"roc_auc": MetricSpread(mean=0.8, std=0.01, windows=10)})
    >>> t = band(policy, stored, "roc_auc", 500)
    >>> round(t.lower, 3), t.upper
    (0.714, None)
    """
    settings = policy.reference_bands
    spread = bands.metrics.get(name)
    if settings is None or spread is None:
        return None
    widen = math.sqrt(max(1.0, bands.window_events / max(labeled, 1)))
    half = multiplier(settings.std, spread.windows) * spread.std * widen
    metric = METRICS[name]
    worse = WORSE.get(name) if settings.sides == "worse" else None
    lower = None if worse == "high" else max(metric.lo, spread.mean - half)
    upper = None if worse == "low" else min(metric.hi, spread.mean + half)
    detail = (f"mean {spread.mean:.4g} -/+ {settings.std:g} sd {spread.std:.3g} (as a "
              f"prediction interval: x{multiplier(settings.std, spread.windows):.3g}) over "
              f"{spread.windows} reference windows of {bands.window_events} labels")
    if widen > 1:
        detail += f", widened x{widen:.2f} for {labeled} labels"
    return KpiThreshold(source="reference", lower=lower, upper=upper, judged=False,
                        detail=detail)


def multiplier(std: float, windows: int) -> float:
    """How many reference standard deviations the band's half-width is: the prediction
    interval of one more window given ``windows`` of them, at the normal coverage of
    ``std`` (3: 99.73 %): ``t(windows - 1) quantile x sqrt(1 + 1 / windows)``.

    >>> [round(multiplier(3.0, k), 2) for k in (10, 20, 1000)]
    [4.29, 3.53, 3.01]
    """
    from scipy import stats  # only when a band is drawn

    coverage = float(stats.norm.cdf(std))
    return float(stats.t.ppf(coverage, windows - 1)) * math.sqrt(1 + 1 / windows)


def _score(value: Any) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
