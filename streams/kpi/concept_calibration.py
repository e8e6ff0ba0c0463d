"""Calibrating a concept-drift detector on the reference's own error stream.

River's detectors come with sensitivities stated for an idealised stream: ADWIN's
``delta`` bounds the false-alarm probability of a stream of *independent* values
in [0, 1]. A regressor's absolute errors are neither: they are in the target's
units (dollars, not [0, 1]), heavy-tailed (one error 50 times the median) and
autocorrelated (neighbouring events share a season, a region, a customer). On a
real housing-price set ADWIN at its default ``delta`` fired in 11 of 12 windows
of a stable model (issue 22). The stated bound means nothing there.

So the reference build measures instead of trusting the bound. With the
reference's labels and predictions it computes the reference's error stream (in
file order, the order labels came in), and chooses the detector's sensitivity so
that, run over windows of the reference's size drawn from that stream, at most
the policy's ``concept_false_alarm_rate`` of the windows raise an alarm:

1. **Scale** (absolute errors only). Errors are divided by the reference's 99th
   percentile and clipped to [0, 1] (``scale``). That makes the stream what
   ADWIN's bound is written for (values in [0, 1]) and the detector unit-free
   (the same errors in dollars or in thousands of dollars give the same
   detections), and no single extreme error can dominate a sub-window's mean.
   A doubling of the error scale still moves the clipped mean by about half.
   0/1 misclassification errors are left as they are (``scale`` None), and so
   are KSWIN's: its Kolmogorov-Smirnov test reads only the errors' order, which
   scaling leaves as it is and clipping would only tie.
2. **Windows.** One stream of ``windows`` (200) x ``window_events`` errors
   (``window_events``: the reference's error count, at most ``max_window_events``,
   5,000), drawn from the reference's error stream by a circular block bootstrap
   (blocks of ``block_events`` consecutive errors from random starts), so that the
   autocorrelation within a block survives. The block length is the first lag at
   which the stream's autocorrelation falls below 0.05 (at least the cube root of
   the stream's length, at most a quarter of it): shorter blocks would break the
   dependence that causes the false alarms. KSWIN's blocks are at least its
   ``window_size`` (300): its test compares the last errors of that window with the
   older ones, and blocks of 18 (the rule above, on the tests' scenario) kept too
   little of that window's dependence: calibrated on them KSWIN fired in 0.14 to 0.2
   of fresh windows of the same process for a target of 0.05; with blocks of 300,
   0.055 to 0.095 (references of 5,000 and 20,000 errors). One detector runs through
   the whole stream, as the KPI agent runs it on a version's errors (river starts a
   detector over after each detection), and the false-alarm rate is the share of
   windows in which it fired at least once. (Fresh detectors on separate windows
   understate it: a detector that has run for a while holds a longer window and
   tests more cut points; on the scenario of the tests, 0.005 fresh against 0.045
   running.) The draws come from ``numpy.random.default_rng(seed)``: the same
   reference gives the same parameters.
3. **Search.** One parameter is searched on a fixed grid: ADWIN's ``delta``
   (``10**-x``, ``x`` from 1 to about 290 in steps of 12 %: autocorrelation
   inflates the variance of a window's mean several times, which ``delta`` only
   offsets through ``ln(1/delta)``, so it must reach very small values) or
   PageHinkley's ``threshold`` (0.5 to about 20,000 in steps of 12 %, in scaled
   units) or DDM's ``drift_threshold`` (3 to about 30 standard deviations in steps
   of 5 %; 0/1 errors only, DDM reads nothing else) or KSWIN's ``alpha``
   (``10**-x``, ``x`` from 1 to about 300 in steps of 1 %: a step costs
   milliseconds, see below), by bisection: the most
   sensitive grid value whose share of alarmed windows is at most the target.
   Before its first alarm a detector's state does not depend on ``delta``,
   ``threshold``, ``drift_threshold`` or ``alpha`` (they only decide when its test fires),
   so the first alarm comes no later with a more sensitive value; later alarms
   depend on where the first one restarted the detector, so the share is monotone
   in the parameter only nearly, and the bisection may stop a grid step or two from
   the most sensitive value within the target: it stays within the target. A step
   stops counting once it is over the target. The policy's own value is tried
   first: within the target, it is kept without a search. The grid starts at the policy's value
   (river's default when the policy sets none): calibration makes a detector less
   sensitive where its errors need it, never more sensitive than the policy asked,
   so a detector that was quiet on a stable model stays as quiet (the rate is a
   ceiling, not a budget to spend: on the simulator's fraud errors it could have
   raised ``delta`` to 0.056 and fired in 5 % of windows instead of none).

The other parameters (ADWIN's ``clock``, PageHinkley's ``delta`` ...) are the
policy's. DDM compares the running error rate with the lowest it has seen, so its
alarm rate grows with the history since its last restart: a per-window rate of a
fresh detector would say little, but the bootstrap runs one detector through all
the windows as the agent does (restarts included), which is what the rate is
measured on. On a stable classifier's 0/1 errors DDM at river's default fires
rarely (0.5-1.5 % of windows of 5,000 at error rates of 6 % and 1 %): calibration
mostly confirms it and states the rate; with a stricter target (0.005 at 1 %
errors) it raised ``drift_threshold`` to 3.65.

KSWIN runs a Kolmogorov-Smirnov test (scipy) per update, about 1 ms with
driftline's window of 300 (0.8 ms measured): river's own detector over 200
windows of 5,000 errors would take 15-25 minutes a search step. So the
calibration runs a replica of its tests (``streams.kpi.kswin_replica``): the
statistic of every update of the bootstrap stream computed once, vectorised
with numpy (for two samples of ``stat_size`` values it is a count, and scipy's
p-value a function of that count alone), and each ``alpha`` a threshold on it,
read from ``scipy.stats.ks_2samp``'s own p-values (the call river makes). The
replica draws each update's sample on its own where river restarts its sampler
after each detection: the same law per test, other detections, the same
false-alarm rate (tested against river's KSWIN); ``kswin_replica.replay``, which
uses river's samples, gives river's detections exactly (tested, and on 200,000
updates of the bootstrap below). The calibrated ``alpha`` keeps the policy's
``seed`` (driftline's 0), so replays stay deterministic.

Cost: up to about 7 bisection steps of up to ``windows x window_events`` detector
updates, fewer where a step goes over the target early. ADWIN is run through its
Rust window directly (0.27 µs an update against 0.76 µs through river's Python
shell, same detections; tested): about 0.7 s for a reference of 20,000 errors
(200 windows of 5,000). PageHinkley is pure Python, 1.6 µs an update: about 6 s.
DDM (pure Python): 1.3 s to 6 s for 20,000 0/1 errors. KSWIN: one vectorised pass
over the 1,000,000 updates (about 3-4 s for absolute errors, sorting 200 ranks a
test; 0.2 s for 0/1 errors, whose statistic is a difference of counts of ones),
then a few milliseconds a grid value. For 0/1 errors and for KSWIN (not scaled)
the uncalibrated run is the run of the policy's value, counted once.

What it cannot do: the reference must itself be stable. A reference whose error
stream holds a real change teaches the detector to ignore such changes; if no
grid value reaches the target, the least sensitive one is kept and
``false_alarm_rate`` says what it reached (``met`` false).
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from schemas.policy import KpiPolicy
from schemas.reference import ConceptCalibration
from schemas.reports import ConceptDetectorInfo
from streams.kpi import kswin_replica
from streams.kpi.concept import DEFAULTS, ConceptDetector, Param, detector_class

logger = logging.getLogger(__name__)

#: The parameter calibrated per kind (its grid runs from the most to the least sensitive).
CALIBRATED: Mapping[str, str] = {
    "adwin": "delta", "page_hinkley": "threshold", "ddm": "drift_threshold", "kswin": "alpha"
}
#: Fewer reference errors than this: no calibration (the windows would be too short to
#: say anything about a live stream).
MIN_ERRORS = 200
#: The 99th percentile of the reference's absolute errors is the scale.
SCALE_QUANTILE = 0.99
#: ACF below this ends a block's dependence (step 2 in the module docstring).
ACF_LIMIT = 0.05
#: ADWIN delta = 10**-x on this grid; PageHinkley threshold on the other.
_ADWIN_EXPONENTS = tuple(float(f"{1.12**k:.4g}") for k in range(0, 51))  # 1 ... ~290
_PH_THRESHOLDS = tuple(float(f"{0.5 * 1.12**k:.4g}") for k in range(0, 95))  # 0.5 ... ~2e4
#: DDM's drift_threshold (standard deviations of the error rate above its minimum).
_DDM_THRESHOLDS = tuple(float(f"{3.0 * 1.05**k:.4g}") for k in range(0, 48))  # 3 ... ~30
#: KSWIN's alpha = 10**-x: a step costs milliseconds (``streams.kpi.kswin_replica``), so the
#: grid is finer than the p-value's steps between attainable statistics (1 % in x).
_KSWIN_EXPONENTS = tuple(float(f"{1.01**k:.4g}") for k in range(0, 574))  # 1 ... ~300


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` found (``schemas.reference.ConceptCalibration`` stores it)."""

    detector: str
    params: dict[str, Param]
    scale: float | None
    target_false_alarm_rate: float
    false_alarm_rate: float
    uncalibrated_false_alarm_rate: float
    met: bool
    windows: int
    window_events: int
    block_events: int
    errors: int
    seed: int
    steps: list[tuple[float, float]] = field(default_factory=list)  # (value, rate) tried


def scale_of(errors: npt.NDArray[np.float64]) -> float | None:
    """The reference's robust range of absolute errors (its 99th percentile), or None for
    0/1 errors (already in [0, 1]) and for a stream whose 99th percentile is 0."""
    if np.all((errors == 0) | (errors == 1)):
        return None
    q = float(np.quantile(errors, SCALE_QUANTILE))
    return q if q > 0 else None


def block_length(errors: npt.NDArray[np.float64]) -> int:
    """Consecutive errors per bootstrap block: the first lag whose autocorrelation is below
    ``ACF_LIMIT``, within [cube root of n, n / 4].

    >>> block_length(np.random.default_rng(0).random(1000))  # independent: the cube root
    10
    """
    n = int(errors.size)
    lo, hi = math.ceil(float(n) ** (1 / 3)), max(1, n // 4)
    x = errors - errors.mean()
    var = float(x @ x)
    if var == 0:
        return int(min(lo, hi))
    spectrum = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(spectrum * np.conj(spectrum))[:hi] / var
    below = np.flatnonzero(acf < ACF_LIMIT)
    lag = int(below[0]) if below.size else hi
    return int(min(max(lag, lo), hi))


def bootstrap_stream(
    errors: npt.NDArray[np.float64], *, events: int, block: int, seed: int
) -> npt.NDArray[np.float64]:
    """``events`` errors drawn from ``errors`` by a circular block bootstrap: blocks of
    ``block`` consecutive errors from random starts (``numpy.random.default_rng(seed)``).

    >>> bootstrap_stream(np.arange(10.0), events=6, block=3, seed=0).tolist()
    [8.0, 9.0, 0.0, 6.0, 7.0, 8.0]
    """
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, errors.size, size=-(-events // block))
    idx = (starts[:, None] + np.arange(block)[None, :]).reshape(-1)[:events] % errors.size
    out: npt.NDArray[np.float64] = errors[idx]
    return out


def alarmed_windows(
    kind: str,
    params: Mapping[str, Param],
    stream: Sequence[float],
    *,
    window_events: int,
    stop_above: int | None = None,
) -> int:
    """Windows of ``window_events`` consecutive errors of ``stream`` in which one detector,
    run through the whole stream as the KPI agent runs it (river starts over after each
    detection), fires at least once; counting stops past ``stop_above``."""
    factory = detector_class(kind)
    det = factory(**params)
    count, last = 0, -1
    helper: Any = getattr(det, "_helper", None)
    if kind == "adwin" and hasattr(helper, "update"):
        # River's ADWIN is a thin shell over a Rust window whose update says whether it
        # detected; the shell starts a new window after a detection. Calling the window
        # directly does the same at a third of the cost (tested against the shell).
        update = helper.update
        for i, x in enumerate(stream):
            if update(x):
                update = factory(**params)._helper.update
                if i // window_events != last:
                    last = i // window_events
                    count += 1
                    if stop_above is not None and count > stop_above:
                        break
        return count
    update = det.update
    for i, x in enumerate(stream):
        update(x)
        if det.drift_detected and i // window_events != last:
            last = i // window_events
            count += 1
            if stop_above is not None and count > stop_above:
                break
    return count


def _kswin_counter(
    stream: npt.NDArray[np.float64], params: Mapping[str, Param], *, window_events: int, seed: int
) -> Callable[[float, int | None], int]:
    """Alarmed windows of the bootstrap ``stream`` per ``alpha``: the statistic of each
    update computed once, vectorised (``streams.kpi.kswin_replica``), each ``alpha`` a
    threshold on it."""
    w, s = int(params["window_size"]), int(params["stat_size"])
    h = kswin_replica.statistics(stream, window_size=w, stat_size=s, seed=seed)

    def count(alpha: float, stop_above: int | None) -> int:
        return kswin_replica.alarmed_windows(
            h,
            kswin_replica.firing(alpha, s),
            window_size=w,
            window_events=window_events,
            stop_above=stop_above,
        )

    return count


def _grid(kind: str, start: float) -> list[float]:
    """The calibrated parameter's values, from ``start`` (the policy's) to the least
    sensitive: calibration never makes a detector more sensitive than the policy's.

    >>> [f"{d:.2g}" for d in _grid("adwin", 0.002)[:3]], _grid("page_hinkley", 50.0)[:3]
    (['0.002', '0.0017', '0.00078'], [50.0, 52.11, 58.36])
    """
    if kind in ("adwin", "kswin"):
        exponents = _ADWIN_EXPONENTS if kind == "adwin" else _KSWIN_EXPONENTS
        return [start, *(d for d in (10.0**-x for x in exponents) if d < start)]
    grid = _DDM_THRESHOLDS if kind == "ddm" else _PH_THRESHOLDS
    return [start, *(t for t in grid if t > start)]


def _policy_value(kind: str, params: Mapping[str, Param]) -> float:
    """The calibrated parameter's value in ``params``, else river's default."""
    name = CALIBRATED[kind]
    value = params.get(name, inspect.signature(detector_class(kind)).parameters[name].default)
    return float(value)


def calibrate(
    errors: npt.ArrayLike,
    *,
    kind: str,
    params: Mapping[str, Param],
    false_alarm_rate: float,
    windows: int = 200,
    max_window_events: int = 5_000,
    seed: int = 0,
) -> Calibration | None:
    """The most sensitive setting of ``kind`` (``CALIBRATED``) with at most
    ``false_alarm_rate`` of bootstrap windows alarmed; None when the kind is not
    calibrated or there are fewer than ``MIN_ERRORS`` finite errors.

    >>> rng = np.random.default_rng(0)
    >>> z = np.zeros(4000)
    >>> for i in range(1, 4000):
    ...     z[i] = 0.9 * z[i - 1] + 0.44 * rng.standard_normal()
    >>> cal = calibrate(np.exp(z), kind="adwin", params={}, false_alarm_rate=0.05, windows=100)
    >>> cal.uncalibrated_false_alarm_rate > 0.5, cal.false_alarm_rate <= 0.05
    (True, True)
    """
    if kind not in CALIBRATED:
        return None
    if not 0 < false_alarm_rate < 1:
        raise ValueError(f"false_alarm_rate must be in (0, 1), not {false_alarm_rate}")
    xs = np.asarray(errors, dtype=np.float64)
    xs = xs[np.isfinite(xs)]
    if xs.size < MIN_ERRORS:
        return None
    if np.any(xs < 0):
        raise ValueError("errors must be non-negative (absolute or 0/1 errors)")
    # KSWIN's test reads the errors' order only: it is given them unscaled
    scale = None if kind == "kswin" else scale_of(xs)
    if kind == "ddm" and scale_of(xs) is not None:
        return None  # DDM reads 0/1 errors only (a classifier's)
    scaled = xs if scale is None else np.minimum(xs / scale, 1.0)
    length = min(xs.size, max_window_events)
    block = block_length(scaled)
    base = {**DEFAULTS.get(kind, {}), **params}
    name = CALIBRATED[kind]
    # validates the policy's parameters (and makes KSWIN's sizes and seed integers)
    base = {**base, **ConceptDetector(kind, **cast(dict[str, Any], base)).params}
    if kind == "kswin":  # blocks as long as its test's window: that window's dependence kept
        block = min(max(block, int(base["window_size"])), max(1, xs.size // 4))
    picks = bootstrap_stream(
        np.arange(xs.size, dtype=np.float64), events=windows * length, block=block, seed=seed
    ).astype(np.intp)
    if kind == "kswin":
        count = _kswin_counter(scaled[picks], base, window_events=length, seed=seed)
    else:
        stream = scaled[picks].tolist()

        def count(value: float, stop_above: int | None) -> int:
            return alarmed_windows(
                kind, {**base, name: value}, stream, window_events=length, stop_above=stop_above
            )

    if scale is None:  # the policy's value on the same stream
        uncalibrated = count(_policy_value(kind, base), None)
    else:
        uncalibrated = alarmed_windows(kind, base, xs[picks].tolist(), window_events=length)

    grid = _grid(kind, _policy_value(kind, base))  # from the policy's value to the least sensitive
    budget = math.floor(false_alarm_rate * windows + 1e-9)
    steps: list[tuple[float, float]] = []
    rates: dict[int, float] = {}

    def within(i: int) -> bool:
        # the policy's value on the same stream: counted above
        n = uncalibrated if i == 0 and scale is None else count(grid[i], budget)
        if n <= budget:
            rates[i] = n / windows
        steps.append((grid[i], n / windows))  # a lower bound when over budget
        return n <= budget

    # the most sensitive index within budget, by bisection; the least sensitive value is
    # evaluated only if the bisection ends there
    # the policy's own value first: when it is within the target, nothing to search
    lo, hi = (0, 0) if within(0) else (1, len(grid) - 1)
    while lo < hi:
        mid = (lo + hi) // 2
        if within(mid):
            hi = mid
        else:
            lo = mid + 1
    met = hi in rates or within(hi)
    if hi not in rates:  # the least sensitive value is over budget: count every window
        rates[hi] = count(grid[hi], None) / windows
    return Calibration(
        detector=kind,
        params={**base, name: grid[hi]},
        scale=scale,
        target_false_alarm_rate=false_alarm_rate,
        false_alarm_rate=rates[hi],
        uncalibrated_false_alarm_rate=uncalibrated / windows,
        met=met,
        windows=windows,
        window_events=length,
        block_events=block,
        errors=int(xs.size),
        seed=seed,
        steps=steps,
    )


def setting(policy: KpiPolicy, stored: bytes | None, *, version: str) -> ConceptDetectorInfo:
    """The detector a series of ``version`` runs, from the policy and what the KPI agent
    stored from the version's reference profile (``stored``: its ``concept`` as JSON,
    ``b"null"`` for a profile without one, None without a profile); uncalibrated, with
    the reason, unless the calibration fits the policy's detector, rate and parameters.

    >>> setting(KpiPolicy(), None, version="v1").reason[:60]
    'no reference profile of v1 has been published (driftline ref'
    """
    kind = policy.concept_detector
    plain = ConceptDetectorInfo(
        detector=kind,
        calibrated=False,
        params=dict(policy.concept_params),  # and driftline's DEFAULTS of the kind
    )
    rate = policy.concept_false_alarm_rate

    def uncalibrated(reason: str) -> ConceptDetectorInfo:
        return plain.model_copy(update={"reason": reason})

    if rate is None:
        return uncalibrated("the policy sets no concept_false_alarm_rate")
    if kind not in CALIBRATED:  # a detector added to driftline without a calibration
        return uncalibrated(f"driftline calibrates {', '.join(CALIBRATED)}, not {kind}")
    if stored is None:
        return uncalibrated(
            f"no reference profile of {version} has been published (driftline reference build "
            "with label and prediction columns calibrates the detector)"
        )
    if stored == b"null":
        return uncalibrated(
            f"the reference profile of {version} has no concept calibration (built without "
            "label and prediction columns, with too few of them, or before driftline "
            "calibrated detectors)"
        )
    cal = ConceptCalibration.model_validate_json(stored)
    if cal.detector != kind:
        return uncalibrated(
            f"{version}'s reference calibrated {cal.detector}, the policy runs {kind}: rebuild "
            "the reference"
        )
    if cal.target_false_alarm_rate != rate:
        return uncalibrated(
            f"{version}'s reference was calibrated to a false-alarm rate of "
            f"{cal.target_false_alarm_rate:g}, the policy asks {rate:g}: rebuild the reference"
        )
    changed = sorted(
        k
        for k, v in policy.concept_params.items()
        if k != CALIBRATED[kind] and cal.params.get(k) != v
    )
    if changed:
        return uncalibrated(
            f"the policy's concept_params {changed} differ from those {version}'s reference "
            "was calibrated with: rebuild the reference"
        )
    return ConceptDetectorInfo(
        detector=kind,
        calibrated=True,
        params=dict(cal.params),
        scale=cal.scale,
        false_alarm_rate=cal.false_alarm_rate,
        target_false_alarm_rate=cal.target_false_alarm_rate,
        window_events=cal.window_events,
    )


def detector(info: ConceptDetectorInfo, saved: bytes | None = None) -> ConceptDetector:
    """The series' detector: ``saved`` (``ConceptDetector.dumps``) if it runs the setting
    ``info`` says, else a fresh one of that setting (the reference or the policy changed:
    the detector starts over)."""
    if saved is not None:
        old = ConceptDetector.loads(saved)
        params = {**DEFAULTS.get(info.detector, {}), **info.params}
        if old.kind == info.detector and old.scale == info.scale and old.params == params:
            return old
        logger.info(
            "concept detector %s replaced by %s (%s)",
            old.params,
            info.params,
            "calibrated" if info.calibrated else "uncalibrated",
        )
    return ConceptDetector(info.detector, scale=info.scale, **info.params)


def stored_form(cal: Calibration | None) -> ConceptCalibration | None:
    """``calibrate``'s result as the profile stores it."""
    if cal is None:
        return None
    return ConceptCalibration(
        detector=cal.detector,  # type: ignore[arg-type]
        params={k: float(v) for k, v in cal.params.items()},
        scale=cal.scale,
        target_false_alarm_rate=cal.target_false_alarm_rate,
        false_alarm_rate=cal.false_alarm_rate,
        uncalibrated_false_alarm_rate=cal.uncalibrated_false_alarm_rate,
        met=cal.met,
        windows=cal.windows,
        window_events=cal.window_events,
        block_events=cal.block_events,
        errors=cal.errors,
        seed=cal.seed,
    )


def reference_errors(
    policy: KpiPolicy, predictions: Sequence[Any], labels: Sequence[Any]
) -> npt.NDArray[np.float64]:
    """The reference's error stream, exactly as the KPI agent computes it from live
    labels (``KpiWindow.add_labeled``): 0/1 misclassification or absolute error, in the
    given order, without pairs whose label or prediction is unusable.

    >>> reference_errors(KpiPolicy(task="regression"), [1.0, 2.0, None], [1.5, 1.0, 3.0])
    array([0.5, 1. ])
    """
    from streams.kpi.window import KpiWindow  # the window kernel, not needed on import

    kpi = KpiWindow(policy)
    matched = [
        ({"v": "", "a": "champion", "t": 0, "p": p, "s": None, "g": {}}, y, 0)
        for p, y in zip(predictions, labels, strict=True)
    ]
    _, errors = kpi.add_labeled(kpi.initialize(), matched)  # type: ignore[arg-type]
    out: npt.NDArray[np.float64] = errors[np.isfinite(errors)]
    return out
