"""The drift table's state codec (agents/runtime/state_codec.py): compact, exact, and it reads state
written by the JSON codec that came before it."""

from __future__ import annotations

import math

import numpy as np
import orjson

from agents.runtime import state_codec
from schemas.policy import DriftPolicy
from streams.batch import FeatureBatch
from streams.drift.monitor import DriftMonitor
from streams.drift.state import VersionState


def _warmup_state() -> VersionState:
    """A version's state during its warm-up: sketches of every numeric feature and the
    multivariate moments, as the drift handler stores them (no reference)."""
    rng = np.random.default_rng(5)
    monitor = DriftMonitor(policy=DriftPolicy(window=60, allowed_lateness=0))
    state = monitor.initialize("fraud", "v1")
    for second in range(3):
        n = 2_000
        columns: dict[str, object] = {f"x{i:02d}": rng.lognormal(i / 10, 1, n) for i in range(12)}
        columns["channel"] = list(rng.choice(["app", "web", "pos"], n))
        state = monitor.update(
            state, FeatureBatch(ts_ms=np.full(n, second * 1000, dtype=np.int64), columns=columns)
        )
    assert state["reference"] is None and state["windows"]["0"].get("mv_halves")
    return state


def test_a_state_written_as_json_before_reads_the_same() -> None:
    state = _warmup_state()
    old = orjson.dumps(state, option=orjson.OPT_SERIALIZE_NUMPY)  # the codec before
    assert state_codec.loads(old) == state
    assert state_codec.loads(b"null") is None and state_codec.loads(None) is None
    assert state_codec.loads(b'{"model": "m", "late": 3}') == {"model": "m", "late": 3}


def test_a_warmup_state_round_trips_exactly_and_is_compact() -> None:
    state = _warmup_state()
    raw = state_codec.dumps(state)
    back = state_codec.loads(raw)
    assert back == state
    assert list(back) == list(state)  # the fields in their order
    assert list(back["windows"]["0"]["numeric"]) == list(state["windows"]["0"]["numeric"])
    before = len(orjson.dumps(state, option=orjson.OPT_SERIALIZE_NUMPY))
    assert len(raw) < 0.7 * before, (len(raw), before)
    assert raw[:1] == state_codec.MARKER


def test_other_values_round_trip() -> None:
    for value in (None, [1, 2.5], "text", 3, {"model": "m", "windows": {}}):
        assert state_codec.loads(state_codec.dumps(value)) == value


def test_numpy_values_are_written_as_the_json_codec_wrote_them() -> None:
    state = {
        "counts": np.arange(5000, dtype=np.int64),  # packed (large)
        "edges": np.array([0.5, 1.5]),
        "n": np.int64(7),
        "mean": np.float64(0.25),
    }
    back = state_codec.loads(state_codec.dumps(state))
    assert back == {"counts": list(range(5000)), "edges": [0.5, 1.5], "n": 7, "mean": 0.25}
    assert type(back["n"]) is int


def test_floats_keep_infinity_where_json_wrote_null() -> None:
    state = {"outer": [math.inf, 1.0, *range(10_000)]}
    back = state_codec.loads(state_codec.dumps(state))
    assert back["outer"][0] == math.inf and back["outer"][1:] == [1.0, *range(10_000)]
