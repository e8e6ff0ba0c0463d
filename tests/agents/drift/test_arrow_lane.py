"""The drift agent's Arrow lane (agents/drift/arrow_lane.py) gives the columns of the usual
way, or refuses the message; the same events give the same reports as JSON and as Arrow."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.dev.simulate import FraudTraffic
from agents.drift.arrow_lane import ArrowLane
from agents.drift.handler import DriftHandler, to_batch
from agents.inputs.codec import Codec, Origin, keyed_events
from schemas import arrow
from schemas.events import FeatureEvent, PredictionEvent
from schemas.policy import Policy
from streams.batch import Column, categorical_column, infer_kind, numeric_column

MODEL = "fraud-detector"
KEY = Origin("predictions", 0, 0, MODEL.encode())


def normalised(column: Column) -> tuple[str | None, list[Any]]:
    """What the drift monitor counts of a column: its kind and its values as read."""
    kind = infer_kind(column)
    if kind == "numeric":
        return kind, [None if math.isnan(v) else v for v in numeric_column(column).tolist()]
    return kind, list(categorical_column(column))


def check_same_as_usual(model: type, raw: bytes, pii: tuple[str, ...] = ()) -> bool:
    """If the lane takes ``raw``, the usual way reads it the same; True if it took it."""
    got = ArrowLane(model, max_message_bytes=1 << 22, pii=pii).decode(raw, KEY)
    if got is None:
        return False
    decoded = Codec(model, max_message_bytes=1 << 22, agent="drift").decode(raw, KEY)
    events = keyed_events(decoded, KEY, agent="drift")
    assert not decoded.dead, f"the lane took what the usual way refuses: {decoded.dead}"
    assert len(events) == len(got.batch)
    assert {e["model"] for e in events} == {got.model}
    assert {e.get("model_version") for e in events} == {got.version}
    want = to_batch(events)
    assert want.ts_ms.tolist() == got.batch.ts_ms.tolist()
    for name in set(want.columns) | set(got.batch.columns):
        nothing = [None] * len(events)
        assert normalised(want.columns.get(name, nothing)) == normalised(
            got.batch.columns.get(name, nothing)
        ), name
    return True


_FEATURE_TYPES = st.sampled_from(["float", "int", "text", "dictionary", "bool", "null"])


def _feature_value(draw: st.DrawFn, kind: str) -> Any:
    if draw(st.integers(0, 4)) == 0:
        return None
    if kind == "float":
        return draw(st.floats(allow_nan=False, allow_infinity=False, width=32))
    if kind == "int":
        return draw(st.integers(-1000, 1000))
    if kind in ("text", "dictionary"):
        return draw(st.sampled_from(["a", "b", "c", "", "é"]))
    if kind == "bool":
        return draw(st.booleans())
    return None


@st.composite
def messages(draw: st.DrawFn) -> tuple[bytes, int]:
    """An Arrow message of predictions, mostly valid, sometimes with odd rows."""
    kinds = draw(
        st.dictionaries(
            st.sampled_from(["amount", "age", "channel", "odd name"]),
            _FEATURE_TYPES,
            min_size=1,
            max_size=4,
        )
    )
    n = draw(st.integers(1, 12))
    odd = {
        "score": draw(st.sampled_from([None, 0.5, math.inf, math.nan])),
        "variant": draw(st.sampled_from([None, "canary", "blue"])),
        "request_id": draw(st.sampled_from(["ok", "", "x" * 201, None])),
        "model_version": draw(st.sampled_from(["v1", "v2", None])),
        "latency_ms": draw(st.sampled_from([None, 3.0, -1.0])),
        "model": draw(st.sampled_from([MODEL, "other"])),
    }
    rows = []
    for i in range(n):
        row: dict[str, Any] = {
            "request_id": f"r{i}",
            "model": MODEL,
            "model_version": "v1",
            "ts": 1_800_000_000 + draw(st.integers(0, 600)) + draw(st.sampled_from([0, 0.5])),
            "prediction": draw(st.booleans()),
            "score": draw(st.floats(0, 1)),
            "features": {k: _feature_value(draw, t) for k, t in kinds.items()},
        }
        if draw(st.integers(0, 5)) == 0:  # one odd field in this row
            field = draw(st.sampled_from(sorted(odd)))
            row[field] = odd[field]
        rows.append(row)
    table = arrow.to_table(rows, categories="string")
    features = table.column("features").combine_chunks()
    children = [features.field(i) for i in range(features.type.num_fields)]
    for i, (name, kind) in enumerate(kinds.items()):  # the drawn types, as Arrow has them
        target = {
            "float": pa.float32(),
            "int": pa.int16(),
            "bool": pa.bool_(),
            "text": pa.string(),
            "null": pa.null(),
        }.get(kind)
        if kind == "dictionary":
            children[i] = children[i].cast(pa.string()).dictionary_encode()
        elif target is not None:
            children[i] = children[i].cast(target)
        assert features.type.field(i).name == name
    struct = pa.StructArray.from_arrays(children, names=list(kinds))
    table = table.set_column(table.column_names.index("features"), "features", struct)
    return arrow.to_ipc(table, batch_rows=draw(st.sampled_from([None, 3]))), n


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=messages())
def test_what_the_lane_takes_the_usual_way_reads_the_same(message: tuple[bytes, int]) -> None:
    raw, _ = message
    check_same_as_usual(PredictionEvent, raw)


def traffic(events: int, seed: int = 4) -> list[dict[str, Any]]:
    return FraudTraffic(seed=seed).events(events, start_s=1_800_000_000, span_s=events // 10)


def test_the_lane_takes_ordinary_traffic_and_counts_categories_as_codes() -> None:
    raw = arrow.to_ipc(traffic(500))
    assert check_same_as_usual(PredictionEvent, raw)
    got = ArrowLane(PredictionEvent, max_message_bytes=1 << 22).decode(raw, KEY)
    assert got is not None
    kinds = {type(c).__name__ for c in got.batch.columns.values()}
    assert kinds <= {"ndarray", "Categories"}, kinds
    feature_events = [
        {
            k: v
            for k, v in e.items()
            if k in ("request_id", "model", "ts", "features", "model_version")
        }
        for e in traffic(50)
    ]
    assert check_same_as_usual(FeatureEvent, arrow.to_ipc(feature_events))


@pytest.mark.parametrize(
    ("why", "change"),
    [
        ("a null request id", lambda e: e.update(request_id=None)),
        ("a score that is not finite", lambda e: e.update(score=math.inf)),
        ("another model", lambda e: e.update(model="other")),
        ("another version", lambda e: e.update(model_version="v2")),
        ("no time", lambda e: e.update(ts=None)),
        ("probabilities", lambda e: e.update(probabilities={"a": 1.0})),
        ("a segment with a null", lambda e: e.update(segment={"country": None})),
    ],
)
def test_a_message_with_a_row_that_does_not_fit_takes_the_usual_way(why: str, change: Any) -> None:
    rows = traffic(3)
    assert check_same_as_usual(PredictionEvent, arrow.to_ipc(rows))
    change(rows[1])
    assert not check_same_as_usual(PredictionEvent, arrow.to_ipc(rows)), why


def test_names_are_counted_in_characters_not_bytes() -> None:
    # 200 two-byte characters are 400 bytes and a valid name; 201 are not.
    rows = traffic(3)
    rows[1]["request_id"] = "é" * 200
    assert check_same_as_usual(PredictionEvent, arrow.to_ipc(rows))
    rows[1]["request_id"] = "é" * 201
    assert not check_same_as_usual(PredictionEvent, arrow.to_ipc(rows))
    rows = traffic(3)
    for row in rows:
        row["model_version"] = "é" * 200  # one name in every row: its length checked once
    assert check_same_as_usual(PredictionEvent, arrow.to_ipc(rows))
    for row in rows:
        row["model_version"] = "é" * 201
    assert not check_same_as_usual(PredictionEvent, arrow.to_ipc(rows))


def test_pii_features_and_json_take_the_usual_way() -> None:
    rows = traffic(3)
    name = next(iter(rows[0]["features"]))
    assert not check_same_as_usual(PredictionEvent, arrow.to_ipc(rows), pii=(name,))
    lane = ArrowLane(PredictionEvent, max_message_bytes=1 << 22)
    assert lane.decode(orjson.dumps({"events": rows}), KEY) is None


def handler() -> DriftHandler:
    policy = Policy.model_validate(
        {"drift": {"window": 60, "allowed_lateness": 0, "min_reference_events": 300}}
    )
    return DriftHandler(
        policy=policy,
        predictions_topic="predictions",
        features_topic="features",
        max_message_bytes=1 << 24,
    )


def reports_of(messages: list[bytes]) -> tuple[list[Any], list[Any]]:
    h, table = handler(), {}  # type: ignore[var-annotated]
    reports, dead = [], []
    for offset, raw in enumerate(messages):
        out = h.handle(raw, Origin("predictions", 0, offset, MODEL.encode()), table)
        reports += [r.model_dump(mode="json") for r in out.reports]
        dead += [(d.offset, d.index, d.error) for d in out.dead]
    return reports, dead


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=st.sampled_from([97, 250, 500, 1200]), seed=st.integers(0, 3), shifted=st.booleans())
def test_the_same_events_give_the_same_reports_as_json_and_as_arrow(
    size: int, seed: int, shifted: bool
) -> None:
    traffic_ = FraudTraffic(seed=seed)
    events = []
    for minute in range(6):  # a warm-up reference, then windows judged on it
        events += traffic_.events(
            600, start_s=1_800_000_000 + 60 * minute, span_s=60, shifted=shifted and minute >= 3
        )
    events[7]["variant"] = "blue"  # a bad row: dead-lettered by itself either way
    chunks = [events[i : i + size] for i in range(0, len(events), size)]
    as_json, dead_json = reports_of([orjson.dumps({"events": c}) for c in chunks])
    as_arrow, dead_arrow = reports_of([arrow.to_ipc(c) for c in chunks])
    assert len(as_json) >= 4
    assert as_arrow == as_json
    assert [d[:2] for d in dead_arrow] == [d[:2] for d in dead_json] == [(0, 7)]
    statuses = {r["status"] for r in as_json}
    assert statuses <= {"ok", "warn", "drift", "warming_up"}


def test_columns_from_arrow_are_arrays_not_lists() -> None:
    got = ArrowLane(PredictionEvent, max_message_bytes=1 << 22).decode(
        arrow.to_ipc(traffic(10)), KEY
    )
    assert got is not None
    amount = got.batch.columns["amount"]
    assert isinstance(amount, np.ndarray) and amount.dtype == np.float64
