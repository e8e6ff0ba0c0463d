"""The msgspec twins (schemas.fast_rows) accept only what the pydantic models accept,
with the same values, so the codec's fast path and its pydantic path agree."""

from __future__ import annotations

import functools
import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from agents.dev import simulate
from agents.inputs.codec import Codec, Origin
from schemas import fast_rows
from schemas.events import EventTime, FeatureEvent, LabelEvent, PredictionEvent, datetime_ms

MODELS = [PredictionEvent, FeatureEvent, LabelEvent]
ORIGIN = Origin("t", 0, 0)


@functools.cache
def codecs(model: type) -> tuple[Codec[Any], Codec[Any]]:
    """The codec as it runs, and the same codec with the fast path switched off."""
    fast = Codec(model, max_message_bytes=1 << 22, agent="drift")
    slow = Codec(model, max_message_bytes=1 << 22, agent="drift")
    slow._fast = None
    return fast, slow


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types (True == 1.0 in Python; not here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.mark.parametrize("model", MODELS)
def test_twins_have_the_models_fields(model: type) -> None:
    row, _ = fast_rows.ROWS[model]
    assert set(row.__annotations__) == set(model.model_fields)
    required = {n for n, f in model.model_fields.items() if f.is_required()}
    assert set(row.__required_keys__) == required


# -- generated events: every field valid, at its edge, or wrong in a typical way ----------

_edge_numbers = st.sampled_from(
    [0, 1, -1, 0.5, 2**53 + 1, 10**30, -(10**30), 1e308, -1e308, 5e-324, 1.7976931348623157e308]
)
_numbers = st.one_of(
    st.integers(-(2**64), 2**64), st.floats(allow_nan=False, allow_infinity=False), _edge_numbers
)
_text = st.one_of(
    st.text(max_size=6), st.sampled_from(["", "x" * 200, "x" * 201, "true", "1.5", "nan", "café"])
)
_scalars = st.one_of(st.none(), st.booleans(), _numbers, _text)
_junk = st.one_of(
    _scalars,
    st.lists(_scalars, max_size=2),
    st.dictionaries(st.text(max_size=3), _scalars, max_size=2),
)


@st.composite
def _time_text(draw: st.DrawFn) -> str:
    """RFC 3339 and its near misses: fractions of 0-9 digits, offsets, case, separators."""
    date = (
        f"{draw(st.integers(1, 9999)):04d}-{draw(st.integers(1, 13)):02d}-"
        f"{draw(st.integers(0, 31)):02d}"
    )
    sep = draw(st.sampled_from(["T", "t", " ", "_"]))
    clock = (
        f"{draw(st.integers(0, 24)):02d}:{draw(st.integers(0, 60)):02d}:"
        f"{draw(st.integers(0, 60)):02d}"
    )
    digits = draw(st.integers(0, 9))
    fraction = (
        "."
        + "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=digits, max_size=digits)))
        if digits
        else ""
    )
    zone = draw(st.sampled_from(["Z", "z", "", "+00:00", "+05:30", "-23:59", "+24:00", "+0100"]))
    return draw(
        st.sampled_from(
            [date + sep + clock + fraction + zone, date, str(draw(st.integers(0, 2 * 10**10)))]
        )
    )


_times = st.one_of(
    st.floats(-3e10, 3e14),
    st.integers(-3 * 10**10, 3 * 10**14),
    st.sampled_from([2e10, 2e10 + 1, -2e10, -2e10 - 1, 2.5e14, 2.5e14 + 1]),
    _time_text(),
    _junk,
)
_features = st.dictionaries(st.text(max_size=4), st.one_of(_scalars, _junk), max_size=4)
_by_field: dict[str, Any] = {
    "ts": _times,
    "features": _features,
    "score": st.one_of(st.none(), _numbers, _junk),
    "probabilities": st.one_of(
        st.none(), st.dictionaries(st.text(max_size=3), _numbers, max_size=3), _junk
    ),
    "latency_ms": st.one_of(st.none(), _numbers, _junk),
    "variant": st.one_of(
        st.sampled_from(["champion", "canary", "challenger", "shadow", "Champion"]), _junk
    ),
    "error": st.one_of(st.booleans(), st.sampled_from([0, 1, "true", "yes"]), _junk),
    "segment": st.one_of(
        st.none(), st.dictionaries(st.text(max_size=3), _scalars, max_size=2), _junk
    ),
}
_VALID: dict[str, Any] = {
    "request_id": "r1",
    "model": "m",
    "model_version": "v1",
    "ts": 1.8e9,
    "prediction": 1,
    "score": 0.3,
    "probabilities": {"a": 0.3},
    "features": {"a": 1.0, "b": "x", "c": True},
    "variant": "canary",
    "latency_ms": 3.0,
    "error": False,
    "segment": {"c": "DE"},
    "label": 1,
}


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    event = dict(_VALID)
    for key in draw(st.sets(st.sampled_from(sorted(_VALID)), max_size=3)):
        del event[key]
    for key in draw(st.sets(st.sampled_from([*_VALID, "extra"]), min_size=1, max_size=3)):
        event[key] = draw(_by_field.get(key, st.one_of(_text, _scalars, _junk)))
    return event


def check_agree(model: type, raw: bytes) -> bool:
    """If the fast path takes ``raw``, pydantic reads it the same; True if it took it."""
    fast, slow = codecs(model)
    rows = fast._decode_fast(raw)
    if rows is None:
        return False
    expected = slow.decode(raw, ORIGIN)
    assert not expected.dead, f"fast path accepted what pydantic refuses: {expected.dead}"
    assert len(expected.events) == len(rows)
    for got, want in zip(rows, expected.events, strict=True):
        assert got["ts_ms"] == want["ts_ms"], (got["ts"], want["ts"])
        assert same(
            {k: v for k, v in got.items() if k != "ts"},
            {k: v for k, v in want.items() if k != "ts"},
        ), (got, want)
    return True


@pytest.mark.parametrize("model", MODELS)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=events())
def test_what_the_fast_path_takes_pydantic_reads_the_same(
    model: type, event: dict[str, Any]
) -> None:
    raw = json.dumps(event).encode()  # json, not orjson: integers past 64 bits too
    check_agree(model, raw)
    check_agree(model, json.dumps({"events": [event, _VALID]}).encode())


@settings(max_examples=300, deadline=None)
@given(stamp=_time_text())
def test_text_times_agree(stamp: str) -> None:
    event = dict(_VALID, ts=stamp)
    check_agree(PredictionEvent, json.dumps(event).encode())


@settings(max_examples=500, deadline=None)
@given(value=st.one_of(st.floats(-2e10, 2.5e14), st.integers(-2 * 10**10, 25 * 10**13)))
def test_epoch_ms_replicates_pydantic(value: float) -> None:
    assert fast_rows.epoch_ms([value]).tolist() == [
        datetime_ms(TypeAdapter(EventTime).validate_python(value))
    ]


def test_epoch_ms_on_many_times() -> None:
    rng = np.random.default_rng(5)
    values = np.concatenate(
        [
            1.8e9 + rng.random(100_000) * 1e6,
            np.round(1.8e9 + rng.random(100_000) * 1e6, 3),
            rng.random(50_000) * 4e10 - 2e10,
            1.8e12 + rng.random(50_000) * 1e9,
            np.floor(2e10 + rng.random(50_000) * 2.5e14) + 0.9999,
        ]
    ).tolist()
    parsed = TypeAdapter(list[EventTime]).validate_python(values)
    assert fast_rows.epoch_ms(values).tolist() == [datetime_ms(d) for d in parsed]


def test_the_fast_path_takes_ordinary_traffic() -> None:
    """The bench's and the simulator's messages (numbers and text times) go fast,
    with the rows pydantic gives."""
    traffic = simulate.FraudTraffic(seed=2)
    messages = simulate.batches(traffic.events(1000, start_s=1_800_000_000, span_s=60), 500)
    assert all(check_agree(PredictionEvent, m) for m in messages)
    one = dict(_VALID, ts="2027-01-15T08:00:00.123456+02:00")
    assert check_agree(PredictionEvent, json.dumps(one).encode())
    assert check_agree(LabelEvent, json.dumps({"events": [one, dict(_VALID)]}).encode())


def test_a_bad_event_sends_the_message_to_pydantic() -> None:
    fast, _ = codecs(PredictionEvent)
    bad = dict(_VALID, score="high")
    decoded = fast.decode(json.dumps({"events": [_VALID, bad, _VALID]}).encode(), ORIGIN)
    assert decoded.positions == [0, 2] and [d.index for d in decoded.dead] == [1]
    assert "score" in decoded.dead[0].error
    assert all(math.isclose(e["ts_ms"], 1.8e12) for e in decoded.events)
