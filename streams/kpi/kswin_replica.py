"""KSWIN's tests, vectorised: what calibrating its ``alpha`` needs (issue 22).

river's KSWIN (river 0.26) keeps the last ``window_size`` (W) errors. Once the
window is full, each update compares its last ``stat_size`` (S) errors with S
errors sampled without replacement from the older W - S
(``random.Random(seed).sample``) by ``scipy.stats.ks_2samp(method="auto")`` and
fires when ``p_value <= alpha and statistic > 0.1``; the next update starts it
over from an empty window and a re-seeded sampler. One scipy call an update,
about 1 ms: measuring a setting on 200 windows of 5,000 errors took 15-25
minutes. Three facts make it cheap:

1. **A count.** Both samples hold S values, so the statistic is h / S for an
   integer h: the largest difference between the two samples' counts of values
   at or below a value. scipy's exact method (S <= 10,000) rounds its statistic
   to that lattice itself and computes the p-value from h alone; so whether an
   update fires is a function of h (``firing``: one table of S + 1 entries per
   ``alpha``, from ``ks_2samp`` itself on two constructed samples whose
   statistic is h / S). Calibrating ``alpha`` is calibrating a threshold on h.
2. **Ranks.** h depends only on the order of the values, so the errors are
   replaced by their ranks (ties kept) and each test is one row of a sorted
   integer array (``counts_gap``: sort, running count, largest gap at the end of
   each run of equal values). For 0/1 errors h is |ones in the sample - ones
   among the recent|.
3. **Positions.** Once full, the window at update i holds the last W errors,
   whatever the restarts before. If the sample of update i depends on i alone,
   h(i) does too: ``statistics`` computes it once for the whole stream
   (vectorised, a chunk of updates at a time), and each ``alpha`` is then a walk
   over the updates whose h fires (``alarmed_windows``), milliseconds.

Fact 3 is the one departure from river, whose sampler restarts with each
detection (update k after a restart draws river's k-th sample). ``statistics``
draws each update's sample from ``numpy.random.default_rng(seed)`` instead: a
uniform S-subset of the older W - S, as river's (picked from a pool of
``POOL`` such subsets drawn once; for 0/1 errors only the sample's count of
ones matters, drawn from its hypergeometric law directly). Each test has
river's distribution; the detections are not river's, the false-alarm rate is
(tested against river's own KSWIN). ``replay`` is the exact replica: river's
own samples (the same ``random.Random(seed).sample`` calls) and restarts, the
same detections as river's KSWIN (tested) at about 40 µs an update instead of
1 ms; the tests use it to measure what river does on long streams.

Memory: a chunk of ``CHUNK`` updates at a time (about 8 MB at S = 100); the
result holds one small integer per update of the stream.
"""

from __future__ import annotations

import functools
import math
import random
import warnings
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

#: Updates whose statistics are computed together (bounds the memory of a chunk).
CHUNK = 8_192
#: Random S-subsets drawn once per calibration; each update picks one at random.
POOL = 16_384
#: river fires only above this statistic too (``st > 0.1``), whatever its p-value.
MIN_STATISTIC = 0.1

Ints = npt.NDArray[np.int64]


@functools.lru_cache(maxsize=16)
def p_values(stat_size: int) -> npt.NDArray[np.float64]:
    """scipy's two-sided ``ks_2samp`` p-value (river's call, ``method="auto"``) of two
    samples of ``stat_size`` values each whose statistic is h / S, for h = 0 ... S.

    >>> p = p_values(100)
    >>> p[0], bool(p[20] < 0.05 < p[15])
    (np.float64(1.0), True)
    """
    from scipy import stats  # imported with the calibration, not with driftline

    s = int(stat_size)
    out = np.empty(s + 1)
    base = np.zeros(s)
    for h in range(s + 1):
        other = np.concatenate([np.zeros(s - h), np.ones(h)])
        with warnings.catch_warnings():  # as river: "auto" may warn and go asymptotic
            warnings.simplefilter("ignore", category=RuntimeWarning)
            res = stats.ks_2samp(base, other, method="auto")
        if round(float(res.statistic) * s) != h:  # pragma: no cover - scipy's lattice
            raise RuntimeError(f"ks_2samp's statistic {res.statistic} is not {h}/{s}")
        out[h] = float(res.pvalue)
    return out


def firing(alpha: float, stat_size: int) -> npt.NDArray[np.bool_]:
    """Whether river's KSWIN fires at statistic h / S, for h = 0 ... S:
    ``p_value <= alpha and statistic > 0.1`` (the statistic as scipy returns it).

    >>> int(np.argmax(firing(0.005, 100)))  # river's default alpha: 25 of 100 or more
    25
    """
    s = int(stat_size)
    h = np.arange(s + 1)
    fires: npt.NDArray[np.bool_] = (p_values(s) <= alpha) & (h * 1.0 / s > MIN_STATISTIC)
    return fires


def ranks(errors: npt.ArrayLike) -> npt.NDArray[np.int32]:
    """Dense ranks of the errors (equal errors, equal ranks): the KS statistic reads
    nothing else."""
    _, inverse = np.unique(np.asarray(errors, dtype=np.float64), return_inverse=True)
    out: npt.NDArray[np.int32] = inverse.astype(np.int32).reshape(-1)
    return out


def counts_gap(older: npt.NDArray[np.int32], recent: npt.NDArray[np.int32]) -> Ints:
    """h per row: the largest |#older <= v - #recent <= v| over values v, for rows of
    ranks of equal length (scipy's statistic times the sample size).

    >>> counts_gap(np.array([[0, 1, 1, 2]], np.int32), np.array([[2, 2, 3, 3]], np.int32))
    array([3])
    """
    keys = np.concatenate([older * 2, recent * 2 + 1], axis=1)  # rank, then the side
    keys.sort(axis=1)
    side = keys & 1
    running = np.cumsum(1 - 2 * side, axis=1, dtype=np.int32)  # #older - #recent so far
    ends = (keys[:, 1:] >> 1) != (keys[:, :-1] >> 1)  # the last of a run of equal values
    gaps = np.abs(running[:, :-1]) * ends
    out: Ints = gaps.max(axis=1, initial=0).astype(np.int64)
    return out


def _older_recent(
    r: npt.NDArray[np.int32],
    at: Ints,
    picks: npt.NDArray[np.intp] | Ints,
    window_size: int,
    stat_size: int,
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    """The sampled older ranks and the recent ranks of the tests at updates ``at``."""
    first = at - (window_size - 1)  # the window's first position
    older = r[first[:, None] + picks]
    recent = r[first[:, None] + (window_size - stat_size) + np.arange(stat_size)]
    return older, recent


def statistics(
    errors: npt.ArrayLike, *, window_size: int, stat_size: int, seed: int = 0
) -> Ints:
    """h of the test at each update ``i >= window_size - 1`` of the stream (entry
    ``i - window_size + 1``), each update's sample drawn on its own (fact 3).

    >>> xs = np.r_[np.zeros(400), np.ones(100)]
    >>> h = statistics(xs, window_size=300, stat_size=100)
    >>> int(h[0]), int(h[-1])  # all equal, then 100 ones against 100 sampled zeros
    (0, 100)
    """
    xs = np.asarray(errors, dtype=np.float64)
    w, s = int(window_size), int(stat_size)
    if not 0 < s <= w - s:
        raise ValueError(
            f"stat_size ({s}) must be positive and at most window_size - stat_size "
            f"({w - s}): river samples stat_size errors from the window's older part"
        )
    n_tests = xs.size - w + 1
    if n_tests <= 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    out = np.empty(n_tests, dtype=np.int64)
    if np.all((xs == 0) | (xs == 1)):
        ones = np.concatenate([[0], np.cumsum(xs.astype(np.int64))])
        at = np.arange(w - 1, xs.size)
        first = at - (w - 1)
        older_ones = ones[first + w - s] - ones[first]
        recent_ones = ones[at + 1] - ones[first + w - s]
        sampled = rng.hypergeometric(older_ones, (w - s) - older_ones, s)
        out[:] = np.abs(sampled - recent_ones)
        return out
    r = ranks(xs)
    pool = np.argsort(rng.random((min(POOL, max(1, n_tests)), w - s)), axis=1)[:, :s]
    choice = rng.integers(0, pool.shape[0], size=n_tests)
    for start in range(0, n_tests, CHUNK):
        stop = min(start + CHUNK, n_tests)
        at = np.arange(start, stop) + (w - 1)
        older, recent = _older_recent(r, at, pool[choice[start:stop]], w, s)
        out[start:stop] = counts_gap(older, recent)
    return out


def alarmed_windows(
    h: Ints,
    fires: npt.NDArray[np.bool_],
    *,
    window_size: int,
    window_events: int,
    stop_above: int | None = None,
) -> int:
    """Windows of ``window_events`` updates in which one KSWIN run through the stream
    fires at least once (``h`` from ``statistics``, ``fires`` from ``firing``): after a
    detection at update i it starts over empty and tests again from i + W; counting
    stops past ``stop_above``.

    >>> alarmed_windows(np.array([0, 5, 5, 0, 5]), firing(0.5, 10) | True,
    ...                 window_size=2, window_events=2)  # fires at 1, 3, 5
    3
    """
    w = int(window_size)
    hits = np.flatnonzero(fires[h]) + (w - 1)  # updates whose test fires
    count, last, nxt, k = 0, -1, w - 1, 0  # nxt: the first update tested since the start
    while True:
        k = int(np.searchsorted(hits, nxt, side="left"))
        if k >= hits.size:
            return count
        i = int(hits[k])
        if i // window_events != last:
            last = i // window_events
            count += 1
            if stop_above is not None and count > stop_above:
                return count
        nxt = i + w  # empty at i + 1, full (tested) at i + W


@functools.lru_cache(maxsize=4)
def river_samples(seed: int, window_size: int, stat_size: int, count: int) -> Ints:
    """river's first ``count`` samples after a (re)start: the same
    ``random.Random(seed).sample`` calls, as indices into the window's older part
    (about 40 µs a sample; kept for the next replay)."""
    rng = random.Random(seed)
    population = range(window_size - stat_size)
    out = np.array([rng.sample(population, stat_size) for _ in range(count)], dtype=np.int64)
    out.flags.writeable = False
    return out


def replay(
    errors: Sequence[float] | npt.NDArray[np.float64],
    *,
    alpha: float,
    window_size: int,
    stat_size: int,
    seed: int,
) -> list[int]:
    """The updates at which river's KSWIN, run through ``errors`` from an empty start,
    fires: river's own samples and restarts (exact; tested against river)."""
    w, s = int(window_size), int(stat_size)
    r = ranks(errors)
    fires = firing(alpha, s)
    samples = np.zeros((0, s), dtype=np.int64)
    hits: list[int] = []
    start = 0
    while start + w - 1 < r.size:
        first_test = start + w - 1
        found = None
        for lo in range(first_test, r.size, CHUNK):
            hi = min(lo + CHUNK, r.size)
            need = hi - first_test
            if samples.shape[0] < need:  # river's sampler restarts with the detector
                samples = river_samples(seed, w, s, 1 << max(need - 1, 1023).bit_length())
            at = np.arange(lo, hi)
            older, recent = _older_recent(r, at, samples[at - first_test], w, s)
            fired = np.flatnonzero(fires[counts_gap(older, recent)])
            if fired.size:
                found = int(at[fired[0]])
                break
        if found is None:
            break
        hits.append(found)
        start = found + 1
    return hits


def window_rate(hits: Sequence[int], *, window_events: int, windows: int) -> float:
    """Share of ``windows`` windows of ``window_events`` updates with a detection."""
    return len({h // window_events for h in hits}) / windows if windows else math.nan
