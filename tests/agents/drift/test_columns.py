"""The drift agent's fast lane (agents/drift/columns.py) gives the columns of the usual
way, or refuses the message; it never changes what the drift agent counts."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.dev.simulate import FraudTraffic, batches
from agents.drift import columns as drift_columns
from agents.drift.columns import ColumnLane
from agents.drift.handler import DriftHandler, to_batch
from agents.inputs.codec import Codec, Origin, keyed_events
from agents.runtime import state_codec
from schemas.events import FeatureEvent, PredictionEvent
from schemas.policy import Policy, parse_policy
from streams.batch import Categories, numeric_column

MODEL = "fraud-detector"
KEY = Origin("predictions", 0, 0, MODEL.encode())
NAMES = ("amount", "channel", "odd name-1", "x")
BASE: dict[str, Any] = {
    "request_id": "r1", "model": MODEL, "model_version": "v1", "ts": 1.8e9,
    "prediction": 1, "score": 0.25, "features": {"amount": 1.0, "channel": "app",
                                                  "odd name-1": None, "x": True},
}


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types (True == 1.0 in Python; not here)."""
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def lane_for(model: type = PredictionEvent, **kwargs: Any) -> ColumnLane:
    """A lane that learnt BASE's layout: amount a number, channel text, the others any."""
    lane = ColumnLane(model, max_message_bytes=1 << 22, **kwargs)
    lane.learn(KEY, [BASE])
    return lane


def usual_way(model: type, raw: bytes, origin: Origin = KEY) -> Any:
    codec = Codec(model, max_message_bytes=1 << 22, agent="drift")
    decoded = codec.decode(raw, origin)
    return decoded, keyed_events(decoded, origin, agent="drift")


def check_same_as_usual(model: type, raw: bytes) -> bool:
    """If the lane takes ``raw``, the usual way reads it the same; True if it took it."""
    got = lane_for(model).decode(raw, KEY)
    if got is None:
        return False
    decoded, events = usual_way(model, raw)
    assert not decoded.dead, f"the lane took what the usual way refuses: {decoded.dead}"
    assert len(events) == len(got.batch)
    assert {e["model"] for e in events} == {got.model}
    assert {e.get("model_version") for e in events} == {got.version}
    want = to_batch(events)
    assert want.ts_ms.tolist() == got.batch.ts_ms.tolist()
    assert list(want.columns) == list(got.batch.columns)  # the same names, in order
    for name, column in want.columns.items():
        lane = got.batch.columns[name]
        if isinstance(lane, np.ndarray):  # a number slot (or the score): read as numbers
            assert all(v is None or type(v) in (int, float) for v in column), (name, column)
            assert numeric_column(column).tobytes() == numeric_column(lane).tobytes(), name
        elif isinstance(lane, Categories):  # a text slot: the same strings
            assert same(list(column), list(lane)), name
        else:
            assert same(list(column), list(lane)), name
    return True


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.floats(), st.text(max_size=3),
    st.sampled_from([1e308, 1.7976931348623157e308, "", "x" * 201]),
)
_junk = st.one_of(_scalars, st.lists(_scalars, max_size=2),
                  st.dictionaries(st.text(max_size=2), _scalars, max_size=2))


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    event = dict(BASE, features={n: draw(_scalars) for n in NAMES})
    for key in draw(st.sets(st.sampled_from(
            ["model", "model_version", "ts", "score", "prediction", "features", "variant",
             "segment", "request_id"]), max_size=2)):
        if draw(st.booleans()):
            event.pop(key, None)
        else:
            event[key] = draw(st.one_of(_junk, st.sampled_from(
                ["other", "v2", "2027-01-15T08:00:00.5+02:00", "2027-01-15"])))
    if draw(st.integers(0, 9)) == 0:  # a feature more or fewer
        features = dict(BASE["features"])
        if draw(st.booleans()):
            features["new"] = 1.0
        else:
            features.pop(NAMES[draw(st.integers(0, len(NAMES) - 1))], None)
        event["features"] = features
    return event


@pytest.mark.parametrize("model", [PredictionEvent, FeatureEvent])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(events(), min_size=1, max_size=4))
def test_what_the_lane_takes_the_usual_way_reads_the_same(
    model: type, batch: list[dict[str, Any]]
) -> None:
    raw = json.dumps({"events": batch}).encode()  # json: integers past 64 bits too
    check_same_as_usual(model, raw)


def test_the_lane_takes_ordinary_traffic() -> None:
    traffic = FraudTraffic(seed=4)
    lane = ColumnLane(PredictionEvent, max_message_bytes=1 << 22)
    messages = list(batches(traffic.events(1500, start_s=1_800_000_000, span_s=90), 500))
    assert lane.decode(messages[0], KEY) is None  # nothing learnt yet
    lane.learn(KEY, usual_way(PredictionEvent, messages[0])[1])
    for raw in messages:
        got = lane.decode(raw, KEY)
        assert got is not None and len(got.batch) == 500 and got.version == "v1"
    text_times = dict(BASE, ts="2027-01-15T08:00:00.123456+02:00")
    assert check_same_as_usual(PredictionEvent, json.dumps({"events": [text_times]}).encode())


@pytest.mark.parametrize(("why", "change"), [
    ("a feature more", lambda e: e["features"].update(new=1.0)),
    ("a feature fewer", lambda e: e["features"].pop("x")),
    ("an invalid event", lambda e: e.update(score="high")),
    ("another model", lambda e: e.update(model="other")),
    ("another version", lambda e: e.update(model_version="v2")),
    ("an unreadable time", lambda e: e.update(ts="yesterday")),
])
def test_a_message_that_does_not_fit_takes_the_usual_way(why: str, change: Any) -> None:
    odd = json.loads(json.dumps(BASE))
    change(odd)
    assert check_same_as_usual(PredictionEvent, json.dumps({"events": [BASE, BASE]}).encode())
    assert not check_same_as_usual(
        PredictionEvent, json.dumps({"events": [BASE, odd]}).encode()), why


def test_refused_outside_batches_other_keys_and_pii() -> None:
    lane = lane_for()
    one = json.dumps(BASE).encode()
    assert lane.decode(one, KEY) is None  # a single event: the usual way
    batch = json.dumps({"events": [BASE]}).encode()
    assert lane.decode(batch, Origin("predictions", 0, 0, b"other")) is None  # no layout
    lane.learn(Origin("predictions", 0, 0, b"other"), [BASE])
    assert lane.decode(batch, Origin("predictions", 0, 0, b"other")) is None  # not its model
    assert lane_for(pii=["channel"]).decode(batch, KEY) is None  # pseudonymised on the usual way
    small = ColumnLane(PredictionEvent, max_message_bytes=len(batch) - 1)
    small.learn(KEY, [BASE])
    assert small.decode(batch, KEY) is None  # too big: the usual way dead-letters it


def test_any_feature_names() -> None:
    """Names that are not identifiers, or that look like the Struct's own slots."""
    features = {"f1": 3, "f0": 2, "a b": 1, "": "e", "class": None}
    event = dict(BASE, features=features)
    lane = ColumnLane(PredictionEvent, max_message_bytes=1 << 22)
    lane.learn(KEY, [event])
    got = lane.decode(json.dumps({"events": [event, event]}).encode(), KEY)
    assert got is not None
    assert {k: v[0] for k, v in got.batch.columns.items()} == {
        "": "e", "a b": 1.0, "class": None, "f0": 2.0, "f1": 3.0,
        "@score": 0.25, "@prediction": 1.0}


@pytest.mark.parametrize("name", ["\x1f", "tab\there", 'a"b', "a\\b"])
def test_names_msgspec_cannot_take_go_the_usual_way(name: str) -> None:
    """msgspec refuses these in a field's name (the fuzz test found the handler
    raising on one): the lane learns no layout for them, and the drift agent
    counts the message on the usual way, with every feature."""
    event = dict(BASE, features={name: 1.5, "amount": 2.0})
    raw = json.dumps({"events": [event, event]}).encode()
    lane = ColumnLane(PredictionEvent, max_message_bytes=1 << 22)
    lane.learn(KEY, [event])
    assert lane.decode(raw, KEY) is None and not lane._layouts
    handler, taken = _handler(Policy(), lane=True)
    reports, table = _run(handler, [raw, raw])
    assert reports == [] and taken == [None, None]
    state = state_codec.loads(table[f"{MODEL}@v1".encode()])
    assert sorted(state["kinds"]) == sorted([name, "amount", "@score", "@prediction"])


def test_learns_only_one_set_of_names() -> None:
    lane = ColumnLane(PredictionEvent, max_message_bytes=1 << 22)
    sparse = dict(BASE, features={"amount": 2.0})
    lane.learn(KEY, [BASE, sparse])
    assert lane.decode(json.dumps({"events": [BASE]}).encode(), KEY) is None
    lane.learn(KEY, [sparse, sparse])
    assert lane.decode(json.dumps({"events": [sparse]}).encode(), KEY) is not None


def test_layouts_are_bounded() -> None:
    lane = ColumnLane(PredictionEvent, max_message_bytes=1 << 22)
    for i in range(drift_columns.MAX_LAYOUTS + 10):
        lane.learn(Origin("p", 0, 0, b"m%d" % i), [dict(BASE, features={f"f{i}": 1.0})])
    assert len(lane._layouts) == len(lane._decoders) == drift_columns.MAX_LAYOUTS
    assert b"m0" not in lane._layouts and b"m%d" % (drift_columns.MAX_LAYOUTS + 9) in lane._layouts


def _run(handler: DriftHandler, messages: list[bytes]) -> tuple[list[str], dict[Any, Any]]:
    table: dict[bytes, bytes] = {}
    reports = []
    for offset, raw in enumerate(messages):
        out = handler.handle(raw, Origin("predictions", 0, offset, MODEL.encode()), table)
        reports += [r.model_dump_json() for r in out.reports]
        reports += [d.error for d in out.dead]
    return reports, table


def _handler(policy: Policy, *, lane: bool, max_models: int = 10) -> tuple[DriftHandler, list[Any]]:
    """A drift handler, and what its lane returned for each message (None: refused)."""
    h = DriftHandler(policy=policy, predictions_topic="predictions", features_topic="features",
                     max_message_bytes=1 << 22, max_models=max_models)
    taken: list[Any] = []
    for topic_lane in h._lanes.values():
        def decode(raw: bytes | None, origin: Origin, d: Any = topic_lane.decode) -> Any:
            taken.append(d(raw, origin) if lane else None)
            return taken[-1]
        topic_lane.decode = decode  # type: ignore[method-assign]
    return h, taken


def test_the_drift_agent_counts_the_same_with_or_without_the_lane() -> None:
    """Reports, dead letters and state, over windows with a shift and a bad event, are
    the same when every message takes the usual way."""
    policy = parse_policy("drift: {window: 60s, allowed_lateness: 0s, min_reference_events: 1000}")
    traffic = FraudTraffic(seed=8)
    messages = []
    for i, shifted in enumerate([False, False, True, False]):
        events = traffic.events(3000, start_s=1_800_000_000 + 60 * i, span_s=60, shifted=shifted)
        messages += batches(events, 500)
    bad = json.loads(messages[5])
    bad["events"][3]["score"] = "high"
    messages[5] = json.dumps(bad).encode()
    (fast, taken), (slow, _) = _handler(policy, lane=True), _handler(policy, lane=False)
    got, want = _run(fast, messages), _run(slow, messages)
    assert any('"status":"drift"' in r for r in want[0])
    assert sum("score" in r and "not a valid" in r for r in want[0]) == 1  # the bad event
    assert got == want
    assert [t is not None for t in taken] == [i not in (0, 5) for i in range(len(messages))]


def test_a_model_not_tracked_is_dead_lettered_on_the_lane_too() -> None:
    messages = list(batches(FraudTraffic(seed=9).events(1000, start_s=1_800_000_000,
                                                        span_s=60), 250))
    (fast, taken), (slow, _) = (_handler(Policy(), lane=on, max_models=0) for on in (True, False))
    got, want = _run(fast, messages), _run(slow, messages)
    assert got == want and len(got[0]) == len(messages)
    assert all("not tracked" in r for r in got[0])
    assert sum(t is not None for t in taken) == len(messages) - 1  # decoded, then refused
