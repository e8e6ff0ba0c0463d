"""Concept-drift detectors (streams/kpi/concept.py): quiet when stationary, fire on a jump,
persist exactly, and never unpickle a class outside the allowlist.

Measured (seeds 0-29 and 42, ``ConceptDetector`` with driftline's defaults):

* ADWIN on 20,000 Bernoulli(0.1) errors: no detection on any of 30 seeds.
* error rate 0.1 -> 0.4 after ``BEFORE[kind]`` events: the first detection after
  the change comes within ``BOUND[kind]`` events. Seen at most: ADWIN 79 after
  10,000 events (119 after 5,000; it checks every 32), PageHinkley 193, KSWIN 86
  (1,000 before; it runs about 2,000 updates/s), DDM 293 after 2,000 events.
  DDM compares with its best error rate since its last detection, so its delay
  grows with that history: at most 746 after 5,000 events and 1,656 after 10,000.
  DDM also fired before the change on most seeds; ADWIN never did.
* absolute regression errors, |N(0, 1)| -> |N(0, 2)|: ADWIN, PageHinkley and KSWIN
  fire within 500 events.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from streams.kpi.concept import (
    DETECTORS,
    ConceptDetector,
    classification_errors,
    regression_errors,
)

Floats = npt.NDArray[np.float64]

BOUND = {"adwin": 300, "page_hinkley": 500, "ddm": 600, "kswin": 300}
#: Events before the change (KSWIN is slow; DDM's delay grows with this history).
BEFORE = {"adwin": 10_000, "page_hinkley": 10_000, "ddm": 2_000, "kswin": 1_000}


def _bernoulli(seed: int, rates: list[tuple[float, int]]) -> Floats:
    rng = np.random.default_rng(seed)
    return np.concatenate([(rng.random(n) < p).astype(np.float64) for p, n in rates])


def _feed(det: ConceptDetector, errors: Floats, batch: int = 1_000) -> list[int]:
    """Absolute positions of the detections, feeding ``batch`` errors at a time."""
    hits: list[int] = []
    for start in range(0, errors.size, batch):
        hits += [start + i for i in det.update(errors[start : start + batch])]
    return hits


@pytest.mark.parametrize("seed", [42, 0, 1, 2, 3, 4])
def test_adwin_stays_quiet_on_a_stationary_stream(seed: int) -> None:
    det = ConceptDetector()
    assert _feed(det, _bernoulli(seed, [(0.1, 20_000)])) == []
    assert det.n == 20_000
    assert det.n_detections == 0


@pytest.mark.parametrize("seed", [42, 7])
def test_adwin_fires_soon_after_the_error_rate_jumps(seed: int) -> None:
    change = 10_000
    hits = _feed(ConceptDetector("adwin"), _bernoulli(seed, [(0.1, change), (0.4, 10_000)]))
    assert hits, "no detection"
    assert all(h >= change for h in hits), "false alarm before the change"
    assert hits[0] - change < BOUND["adwin"]


@pytest.mark.parametrize("kind", sorted(DETECTORS))
def test_every_detector_fires_on_the_jump(kind: str) -> None:
    change = BEFORE[kind]
    errors = _bernoulli(42, [(0.1, change), (0.4, 2_000)])
    hits = _feed(ConceptDetector(kind), errors)
    after = [h - change for h in hits if h >= change]
    assert after and after[0] < BOUND[kind], (kind, hits)


@pytest.mark.parametrize("kind", ["adwin", "page_hinkley", "kswin"])
def test_detectors_fire_on_absolute_regression_errors(kind: str) -> None:
    rng = np.random.default_rng(42)
    change = BEFORE[kind]
    y = rng.normal(50.0, 10.0, change + 2_000)
    noise = np.concatenate([rng.normal(0.0, 1.0, change), rng.normal(0.0, 2.0, 2_000)])
    hits = _feed(ConceptDetector(kind), regression_errors(y, y + noise))
    after = [h - change for h in hits if h >= change]
    assert after and after[0] < 500, (kind, hits)


@pytest.mark.parametrize("kind", sorted(DETECTORS))
def test_dumps_loads_continues_identically(kind: str) -> None:
    n = 2_000 if kind == "kswin" else 30_000  # KSWIN: a scipy test per update
    errors = _bernoulli(3, [(0.1, n // 2), (0.5, n // 4), (0.2, n // 4)])
    straight = ConceptDetector(kind)
    expected = _feed(straight, errors, batch=250)
    assert expected, "the stream should make every detector fire at least once"

    det = ConceptDetector(kind)
    got: list[int] = []
    for start in range(0, errors.size, 250):  # persist and reload between every batch
        det = ConceptDetector.loads(det.dumps())
        got += [start + i for i in det.update(errors[start : start + 250])]
    assert got == expected
    assert (det.n, det.n_detections) == (straight.n, straight.n_detections)
    assert det.kind == kind and det.params == straight.params


def test_reload_right_after_a_detection() -> None:
    errors = _bernoulli(5, [(0.1, 5_000), (0.5, 5_000)])
    straight = _feed(ConceptDetector(), errors, batch=1)
    first = straight[0]
    det = ConceptDetector()
    det.update(errors[: first + 1])  # the batch ends on the detection
    det = ConceptDetector.loads(det.dumps())
    rest = [first + 1 + i for i in det.update(errors[first + 1 :])]
    assert [first, *rest] == straight


def test_state_is_small() -> None:
    det = ConceptDetector()
    det.update(_bernoulli(0, [(0.1, 200_000)]))
    assert len(det.dumps()) < 4_000


# -- the restricted unpickler --------------------------------------------------------------


class _Exploit:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def test_loads_refuses_os_system(tmp_path: Path) -> None:
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to unpickle (posix|nt)\.system"):
        ConceptDetector.loads(pickle.dumps(os.system))
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"format": "driftline.concept/1", "attributes": _Exploit(marker)})
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        ConceptDetector.loads(payload)
    assert not marker.exists()


@pytest.mark.parametrize(
    "obj",
    [getattr, eval, Path("x"), ConceptDetector, np.array([1.0, 2.0])],
    ids=["getattr", "eval", "path", "our-own-class", "ndarray"],
)
def test_loads_refuses_every_class_outside_the_allowlist(obj: object) -> None:
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        ConceptDetector.loads(pickle.dumps(obj))


def test_loads_refuses_a_whole_pickled_detector() -> None:
    """river's own pickle of a detector names the detector class: not on the allowlist."""
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        ConceptDetector.loads(pickle.dumps(ConceptDetector()._detector))


def _payload(det: ConceptDetector) -> dict[str, Any]:
    return pickle.loads(det.dumps())  # type: ignore[no-any-return]  # our own bytes


@pytest.mark.parametrize(
    ("tamper", "match"),
    [
        (lambda p: p.update(format="other"), "not a concept-detector state"),
        (lambda p: p.update(kind="nonsense"), "unknown concept-drift detector"),
        (lambda p: p.update(kind="ddm"), "expects"),  # ADWIN's attributes on a DDM
        (lambda p: p["attributes"].update(extra=1), "expects"),
        (lambda p: p["attributes"].update(_helper=1.5), "expected a AdaptiveWindowing"),
        (lambda p: p.update(n="many"), "malformed"),
        (lambda p: p.pop("attributes"), "malformed"),
    ],
)
def test_loads_rejects_a_wrong_payload(tamper: Any, match: str) -> None:
    payload = _payload(ConceptDetector())
    tamper(payload)
    with pytest.raises(ValueError, match=match):
        ConceptDetector.loads(pickle.dumps(payload))
    with pytest.raises(ValueError, match="not a concept-detector state"):
        ConceptDetector.loads(pickle.dumps([1, 2]))


# -- configuration and input ------------------------------------------------------------------


def test_kinds_and_parameters() -> None:
    assert ConceptDetector("Page-Hinkley").kind == "page_hinkley"
    assert ConceptDetector("adwin", delta=0.01).params == {"delta": 0.01}
    assert ConceptDetector("kswin").params == {"seed": 0, "window_size": 300, "stat_size": 100}
    assert ConceptDetector("kswin", seed=3).params["seed"] == 3
    with pytest.raises(ValueError, match="unknown concept-drift detector"):
        ConceptDetector("cusum")
    with pytest.raises(ValueError, match="not \\['threshold'\\]"):
        ConceptDetector("adwin", threshold=3.0)
    with pytest.raises(ValueError, match="not a bool, number or string"):
        ConceptDetector("kswin", seed=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window"):
        ConceptDetector("kswin", window=[0.0])  # type: ignore[arg-type]


def test_kswin_is_deterministic() -> None:
    errors = _bernoulli(1, [(0.1, 1_000), (0.4, 1_000)])
    assert _feed(ConceptDetector("kswin"), errors) == _feed(ConceptDetector("kswin"), errors)


def test_bad_errors_are_refused() -> None:
    with pytest.raises(ValueError, match="0/1 errors only"):
        ConceptDetector("ddm").update([0.0, 0.5])
    with pytest.raises(ValueError, match="finite"):
        ConceptDetector().update([0.0, float("nan")])
    with pytest.raises(ValueError, match="one-dimensional"):
        ConceptDetector().update(np.zeros((2, 2)))
    assert ConceptDetector().update([]) == []


def test_error_helpers() -> None:
    assert classification_errors(np.array([1, 0, 1, 0]), np.array([1, 1, 0, 0])).tolist() == [
        0.0, 1.0, 1.0, 0.0,
    ]
    assert classification_errors(["a", "b"], ["a", "c"]).tolist() == [0.0, 1.0]
    assert regression_errors([1.0, -2.0], [0.5, 1.0]).tolist() == [0.5, 3.0]


@pytest.mark.parametrize("seed", range(4))
def test_adwin_inlined_update_equals_rivers_own(seed: int) -> None:
    """``ConceptDetector.update`` inlines ADWIN's update (``_update_adwin``): the same
    detections, in batches of any size, across reloads, as river's ``ADWIN.update``
    one value at a time, and the same state bytes."""
    from river.drift import ADWIN

    rng = np.random.default_rng(seed)
    errors = np.concatenate(
        [rng.random(3000) < 0.05, rng.random(3000) < 0.5, rng.random(3000) < 0.05]
    ).astype(np.float64)
    river_own = ADWIN()
    expected = []
    for i, x in enumerate(errors.tolist()):
        river_own.update(x)
        if river_own.drift_detected:
            expected.append(i)
    assert len(expected) >= 2  # the jump up and the jump down
    detector, got, at = ConceptDetector(), [], 0
    for size in rng.integers(1, 700, size=100).tolist():
        part = errors[at : at + size]
        got += [at + i for i in detector.update(part)]
        detector = ConceptDetector.loads(detector.dumps())
        at += size
        if at >= errors.size:
            break
    assert got == expected
    twin = ConceptDetector()
    vars(twin._detector).update(
        {k: v for k, v in vars(river_own).items() if not callable(v)}
    )
    twin.n, twin.n_detections = detector.n, detector.n_detections
    assert detector.dumps() == twin.dumps()
