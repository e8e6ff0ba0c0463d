"""Concept drift: a change detector on a model version's error stream.

Feature drift says the inputs moved; concept drift says the model got worse at
the same job. Its signal is the error stream of labeled events in label order:
0/1 misclassification for a classifier (:func:`classification_errors`), the
absolute error for a regressor (:func:`regression_errors`). A
:class:`ConceptDetector` wraps one of river's detectors (river 0.26):

================ ============================== ==================================
kind             river class                    input
================ ============================== ==================================
``adwin``        ``river.drift.ADWIN``          any stream (the default)
``ddm``          ``river.drift.binary.DDM``     0/1 only (a ValueError otherwise)
``page_hinkley`` ``river.drift.PageHinkley``    any stream
``kswin``        ``river.drift.KSWIN``          any stream
================ ============================== ==================================

With ``scale``, each error is divided by it and clipped to [0, 1] before the
detector sees it (the reference's calibration, ``streams.kpi.concept_calibration``,
which calibrates each kind's sensitivity: ADWIN's ``delta``, PageHinkley's
``threshold``, DDM's ``drift_threshold``, KSWIN's ``alpha``).

Parameters are river's (``ConceptDetector("adwin", delta=0.001)``); driftline
changes two defaults. KSWIN gets ``seed=0``, so that a replay of the same topic
range gives the same detections (river's default draws its sample from an
unseeded generator). And KSWIN gets ``window_size=300, stat_size=100`` instead
of 100/30: on 0/1 errors its Kolmogorov-Smirnov test compares two Bernoulli
samples, and with 30 against 30 the critical distance at ``alpha=0.005`` is
0.45, so even a jump of the error rate from 0.1 to 0.4 (a distance of 0.3)
is usually missed; with 100 against 100 it is 0.25. Parameters river needs as
integers (window sizes, counts, KSWIN's seed) are taken as such from the whole
floats a policy's or a profile's JSON gives (``window_size: 300`` reads as 300.0).

Cost: ADWIN, DDM and PageHinkley each update in under a microsecond
(River 0.26's ADWIN runs in Rust, ``river._river_rust``); KSWIN runs one scipy
KS test per update (about 0.8 ms), so it is for low-volume models only (a few
thousand updates/s; its calibration does not run river's KSWIN but a vectorised
replica of its tests, ``streams.kpi.kswin_replica``). ``driftline bench --labels``
measures the label join, detector included.

Detection delay, measured (error rate 0.1 -> 0.4, 31 seeds): ADWIN fires at
most 119 events after the change (it checks every ``clock=32`` events),
PageHinkley 199, KSWIN 86. ADWIN never fired on 30 stationary streams of 20,000
Bernoulli(0.1) errors; DDM raised a false alarm within 5,000 stationary errors
on 14 of 20 seeds. DDM compares the error rate
since its last detection with the best it has seen, so its delay grows with
that history: at most 293 events after 2,000 stationary ones, 746 after 5,000,
1,656 after 10,000. Prefer ADWIN (the default) for a long-lived model version.

Persistence. A Faust table needs the detector as bytes. River detectors are
plain Python objects (ADWIN's core is a Rust object that pickles its own
state), so :meth:`ConceptDetector.dumps` uses pickle. But unpickling runs
whatever constructor a pickle names, so unpickling bytes from a topic would let
anyone who can write to that topic (or its changelog) run code in the worker.
The changelog is internal state, and still we never unpickle arbitrary classes:
:meth:`ConceptDetector.loads` reads through a restricted ``pickle.Unpickler``
whose ``find_class`` allows only the handful of classes river's detectors hold
(``_ALLOWED``: ADWIN's Rust window, ``river.stats.Mean``, ``collections.deque``,
``random.Random``, numpy's dtype and scalar) and refuses anything else with
``pickle.UnpicklingError`` before it is called. Not even ``builtins.getattr``
is allowed (with it a pickle can reach any attribute of an allowed object),
which is why the payload does not pickle the detector object itself (a
PageHinkley holds a bound method, which pickles through ``getattr``): it holds
the kind, the parameters and the detector's attributes; ``loads`` builds a
fresh detector from the kind and parameters and restores the attributes,
checking that each one exists on the fresh detector with a compatible type.
What the allowlist does not protect against is a well-formed but wrong state
of an allowed class (a detector that misjudges); the changelog's integrity is
the broker's job.

Size of :meth:`ConceptDetector.dumps`: ADWIN's window is compressed into
exponential buckets (about 2.5 KB after 200,000 updates, growing with the log of
its width); KSWIN keeps ``window_size`` values (about 7 KB at 300); DDM and
PageHinkley a few numbers (under 500 bytes).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import io
import math
import pickle
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

Param = bool | int | float | str

#: The river detector class per kind, as (module, name): imported at the first
#: detector's creation, not with this module. ``river.drift`` takes 2-3 s to import
#: (its package imports river's datasets, and with them scikit-learn, scipy.stats and
#: SQLAlchemy), which every worker start and every CLI verb paid before.
DETECTORS: Mapping[str, tuple[str, str]] = {
    "adwin": ("river.drift", "ADWIN"),
    "ddm": ("river.drift.binary", "DDM"),
    "page_hinkley": ("river.drift", "PageHinkley"),
    "kswin": ("river.drift", "KSWIN"),
}


def detector_class(kind: str) -> Callable[..., Any]:
    """The river class of a kind of ``DETECTORS``."""
    module, name = DETECTORS[kind]
    cls: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return cls


#: driftline's defaults where they differ from river's (see the module docstring).
DEFAULTS: Mapping[str, Mapping[str, Param]] = {
    "kswin": {"seed": 0, "window_size": 300, "stat_size": 100},
}
_BINARY_ONLY = frozenset({"ddm"})
#: Parameters river needs as integers (sizes, counts, KSWIN's seed). A policy's and a
#: reference's parameters are JSON numbers, read as floats: 300.0 is given as 300.
_INTEGERS = frozenset(
    {"clock", "max_buckets", "min_window_length", "grace_period", "min_instances",
     "warm_start", "window_size", "stat_size", "seed"}
)
_NOT_PARAMS = frozenset({"self", "window"})  # KSWIN's window: an initial sample, not a setting

#: Everything a detector's state may hold, as (module, name).
_ALLOWED = frozenset(
    {
        ("river._river_rust.drift", "AdaptiveWindowing"),  # ADWIN's window (pickles as bytes)
        ("river.stats.mean", "Mean"),  # DDM, PageHinkley
        ("collections", "deque"),  # KSWIN's window
        ("random", "Random"),  # KSWIN's sampler
        ("numpy", "dtype"),  # KSWIN's p-value, a numpy scalar
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.multiarray", "scalar"),  # the same before numpy 2
    }
)
_FORMAT = "driftline.concept/1"
_RIVER = importlib.metadata.version("river")
_SCALARS = (bool, int, float, np.number, type(None))


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to unpickle {module}.{name}: concept-detector state may only hold "
            "river detector internals (" + ", ".join(sorted(".".join(a) for a in _ALLOWED)) + ")"
        )


def _as_int(name: str, value: Param) -> Param:
    """``value`` as an int where it is a whole number, else a ValueError naming ``name``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value != int(value)
    ):
        raise ValueError(f"parameter {name}={value!r} must be a whole number")
    return int(value)


def _normalise(kind: str) -> str:
    key = kind.strip().lower().replace("-", "_")
    if key not in DETECTORS:
        raise ValueError(f"unknown concept-drift detector {kind!r}; choose from {list(DETECTORS)}")
    return key


class ConceptDetector:
    """One river drift detector on an error stream, fed a batch at a time.

    >>> rng = np.random.default_rng(1)
    >>> errors = np.concatenate([rng.random(3000) < 0.1, rng.random(3000) < 0.4])
    >>> d = ConceptDetector()
    >>> [3000 <= i < 3300 for i in d.update(errors[:4000])]  # the jump, within 300 events
    [True]
    >>> d2 = ConceptDetector.loads(d.dumps())
    >>> d2.update(errors[4000:]) == d.update(errors[4000:])
    True
    """

    def __init__(self, kind: str = "adwin", *, scale: float | None = None, **params: Param) -> None:
        self.kind = _normalise(kind)
        if scale is not None and not (isinstance(scale, int | float) and 0 < scale < math.inf):
            raise ValueError(f"scale must be a positive number, not {scale!r}")
        #: errors are divided by it and clipped to [0, 1] before the detector sees them
        #: (``streams.kpi.concept_calibration``); None: fed as they are
        self.scale = None if scale is None else float(scale)
        factory = detector_class(self.kind)
        allowed = set(inspect.signature(factory).parameters) - _NOT_PARAMS
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise ValueError(f"{self.kind} takes {sorted(allowed)}, not {unknown}")
        for name, value in params.items():
            if not isinstance(value, Param):
                raise ValueError(f"parameter {name}={value!r} is not a bool, number or string")
        self.params: dict[str, Param] = {
            name: _as_int(name, value) if name in _INTEGERS else value
            for name, value in {**DEFAULTS.get(self.kind, {}), **params}.items()
        }
        self._detector: Any = factory(**self.params)
        #: Errors seen and drifts detected since the detector was created.
        self.n = 0
        self.n_detections = 0

    def update(self, errors: Sequence[float] | npt.NDArray[Any]) -> list[int]:
        """Feed one batch of errors in order; the positions in it where drift was detected.

        After a detection the detector starts over from the next error (river's
        behaviour), so one change is reported once.
        """
        xs = np.asarray(errors, dtype=np.float64)
        if xs.ndim != 1:
            raise ValueError("errors must be one-dimensional")
        if not np.isfinite(xs).all():
            raise ValueError("errors must be finite (drop events without a label or prediction)")
        if self.kind in _BINARY_ONLY and not np.all((xs == 0) | (xs == 1)):
            raise ValueError(f"{self.kind} takes 0/1 errors only; use adwin for absolute errors")
        if self.scale is not None:
            xs = np.minimum(np.abs(xs) / self.scale, 1.0)
        det = self._detector
        hits: list[int] = []
        if self.kind == "adwin" and hasattr(det, "_helper"):
            self._update_adwin(det, xs.tolist(), hits)
        else:
            update = det.update
            for i, x in enumerate(xs.tolist()):
                update(x)
                if det.drift_detected:
                    hits.append(i)
        self.n += int(xs.size)
        self.n_detections += len(hits)
        return hits

    @staticmethod
    def _update_adwin(det: Any, xs: list[float], hits: list[int]) -> None:
        """``ADWIN.update`` on each value, inlined (river 0.26: its Rust window's ``update``
        says whether it detected; a detection resets the window at the next value): a
        third of the cost per error (``tests/streams/kpi/test_concept.py`` compares)."""
        helper = det._helper
        for i, x in enumerate(xs):
            if det._drift_detected:
                det._reset()
                helper = det._helper
            fired = helper.update(x)
            det._drift_detected = fired
            if fired:
                hits.append(i)

    def dumps(self) -> bytes:
        """The detector as bytes for a table; read back with :meth:`loads`."""
        attrs = {
            k: v
            for k, v in vars(self._detector).items()
            if not (inspect.ismethod(v) and v.__self__ is self._detector)  # rebuilt from params
        }
        payload = {
            "format": _FORMAT,
            "river": _RIVER,
            "kind": self.kind,
            "params": self.params,
            "scale": self.scale,
            "n": self.n,
            "n_detections": self.n_detections,
            "attributes": attrs,
        }
        return pickle.dumps(payload, protocol=4)

    @classmethod
    def loads(cls, data: bytes) -> ConceptDetector:
        """A detector from :meth:`dumps` bytes, through the restricted unpickler.

        Raises ``pickle.UnpicklingError`` for a class outside the allowlist and
        ``ValueError`` for a payload that is not a detector state of this river.
        """
        payload = _RestrictedUnpickler(io.BytesIO(data)).load()
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise ValueError(f"not a concept-detector state ({_FORMAT})")
        kind, params, attrs = payload.get("kind"), payload.get("params"), payload.get("attributes")
        n, n_detections = payload.get("n"), payload.get("n_detections")
        if not (
            isinstance(kind, str)
            and isinstance(params, dict)
            and isinstance(attrs, dict)
            and isinstance(n, int)
            and isinstance(n_detections, int)
        ):
            raise ValueError("malformed concept-detector state")
        scale = payload.get("scale")  # absent in states saved before driftline scaled errors
        if scale is not None and not isinstance(scale, float):
            raise ValueError("malformed concept-detector state (scale)")
        out = cls(kind, scale=scale, **params)
        fresh = {
            k: v
            for k, v in vars(out._detector).items()
            if not (inspect.ismethod(v) and v.__self__ is out._detector)
        }
        saved_by = payload.get("river")
        if set(attrs) != set(fresh):
            raise ValueError(
                f"the {kind} state saved by river {saved_by} has attributes {sorted(attrs)}, "
                f"river {_RIVER} expects {sorted(fresh)}; start a fresh detector"
            )
        for key, value in attrs.items():
            old = fresh[key]
            if type(value) is not type(old) and not (
                isinstance(value, _SCALARS) and isinstance(old, _SCALARS)
            ):
                raise ValueError(
                    f"attribute {key} of the saved {kind} is a {type(value).__name__}, "
                    f"expected a {type(old).__name__}"
                )
        vars(out._detector).update(attrs)
        out.n, out.n_detections = n, n_detections
        return out


def classification_errors(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """1.0 where the prediction missed the label, else 0.0 (0/1 arrays or any labels).

    >>> classification_errors([1, 0, 1], [1, 1, 0]).tolist()
    [0.0, 1.0, 1.0]
    """
    missed: npt.NDArray[np.bool_] = np.asarray(y_true) != np.asarray(y_pred)
    return missed.astype(np.float64)


def regression_errors(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Absolute errors ``|y_pred - y_true|`` (drop non-finite pairs before the detector).

    >>> regression_errors([1.0, 2.0], [1.5, 1.0]).tolist()
    [0.5, 1.0]
    """
    out: npt.NDArray[np.float64] = np.abs(
        np.asarray(y_pred, dtype=np.float64) - np.asarray(y_true, dtype=np.float64)
    )
    return out
