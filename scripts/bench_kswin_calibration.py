"""KSWIN's calibration, measured (docs/kpi.md, "KSWIN"): its cost on a reference of 5,000
errors, and the false-alarm rate of river's KSWIN with the calibrated alpha.

For each scenario (absolute errors of a stable regressor, lognormal with their log an
AR(1) of lag-1 correlation 0.8; the same as a classifier's 0/1 errors; independent 0/1
errors) it calibrates on 5,000 errors (target 0.05, windows of 5,000), then runs river's
own KSWIN (``ConceptDetector``, 0.5-1 ms an update) over the first ``--river-windows``
bootstrap windows and checks that ``kswin_replica.replay`` gives the same detections,
and with ``replay`` (river's detections, 25 times faster) measures all 200 bootstrap
windows and 200 fresh windows of the same process.

    PYTHONPATH=. python scripts/bench_kswin_calibration.py --river-windows 40

About 15 minutes with 40 river windows (most of it river's KSWIN); seeded.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import numpy.typing as npt
from scipy.signal import lfilter

from streams.kpi import concept_calibration as cc
from streams.kpi import kswin_replica as kr
from streams.kpi.concept import ConceptDetector

Floats = npt.NDArray[np.float64]


def lognormal_ar(n: int, seed: int, phi: float = 0.8) -> Floats:
    """As tests/streams/kpi/test_concept_calibration.py's ``errors``."""
    rng = np.random.default_rng(seed)
    shocks = rng.standard_normal(n) * np.sqrt(1 - phi**2)
    shocks[0] = rng.standard_normal()
    out: Floats = 1000.0 * np.exp(lfilter([1.0], [1.0, -phi], shocks))
    return out


def runs_of_errors(n: int, seed: int) -> Floats:
    out: Floats = (lognormal_ar(n, seed) > 2500).astype(np.float64)
    return out


def independent(n: int, seed: int) -> Floats:
    out: Floats = (np.random.default_rng(seed).random(n) < 0.1).astype(np.float64)
    return out


def rate(cal: cc.Calibration, stream: Floats) -> float:
    hits = kr.replay(stream, alpha=float(cal.params["alpha"]), window_size=300,
                     stat_size=100, seed=0)
    return kr.window_rate(hits, window_events=cal.window_events,
                          windows=stream.size // cal.window_events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--river-windows", type=int, default=40)
    args = parser.parse_args()
    for name, make in (
        ("absolute errors (lognormal, AR 0.8)", lognormal_ar),
        ("0/1 errors in runs", runs_of_errors),
        ("independent 0/1 errors", independent),
    ):
        reference = make(5_000, 1)
        started = time.perf_counter()
        cal = cc.calibrate(reference, kind="kswin", params={}, false_alarm_rate=0.05)
        assert cal is not None
        took = time.perf_counter() - started
        print(f"{name}: mean {reference.mean():.3g}; calibrated in {took:.2f} s: alpha "
              f"{cal.params['alpha']:.3g}, bootstrap rate {cal.false_alarm_rate} "
              f"(uncalibrated {cal.uncalibrated_false_alarm_rate}), block {cal.block_events}",
              flush=True)
        size = cal.window_events
        picks = cc.bootstrap_stream(np.arange(reference.size, dtype=np.float64),
                                    events=cal.windows * size, block=cal.block_events,
                                    seed=cal.seed).astype(np.intp)
        stream = reference[picks]
        part = stream[: args.river_windows * size]
        started = time.perf_counter()
        hits = ConceptDetector("kswin", **cal.params).update(part)
        took = time.perf_counter() - started
        same = hits == kr.replay(part, alpha=float(cal.params["alpha"]), window_size=300,
                                 stat_size=100, seed=0)
        print(f"  river's KSWIN on the first {args.river_windows} bootstrap windows: rate "
              f"{kr.window_rate(hits, window_events=size, windows=args.river_windows)} "
              f"({len(hits)} detections, {took / max(part.size, 1) * 1e6:.0f} µs an update); "
              f"replay's detections the same: {same}", flush=True)
        print(f"  river's (replay) on all {cal.windows} bootstrap windows: {rate(cal, stream)}; "
              f"on {cal.windows} fresh windows: {rate(cal, make(cal.windows * size, 7))}",
              flush=True)


if __name__ == "__main__":
    main()
