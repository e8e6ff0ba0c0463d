"""Input events (schemas/events.py) and the JSON Schema export (schemas/export.py)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from agents import cli
from schemas.events import Batch, FeatureEvent, LabelEvent, PredictionEvent, TrainingRecord
from schemas.export import ARROW_TOPICS, PUBLIC, json_schemas

TS_2024 = 1_704_067_200_000  # 2024-01-01T00:00:00Z in epoch ms


def _event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "request_id": "r-1",
        "model": "fraud",
        "model_version": "v1",
        "ts": "2024-01-01T00:00:00Z",
        "prediction": 1,
    }
    base.update(overrides)
    return base


# -- event time ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "expected_ms"),
    [
        ("2024-01-01T00:00:00Z", TS_2024),
        ("2024-01-01T00:00:00.123Z", TS_2024 + 123),
        ("2024-01-01T01:00:00+01:00", TS_2024),
        (1_704_067_200, TS_2024),
        (1_704_067_200.5, TS_2024 + 500),
        (1_700_000_000.123, 1_700_000_000_123),
    ],
)
def test_ts_accepts_rfc3339_and_epoch_seconds(ts: Any, expected_ms: int) -> None:
    event = PredictionEvent.model_validate(_event(ts=ts))
    assert event.ts_ms() == expected_ms
    assert event.ts.tzinfo is not None


@pytest.mark.parametrize("ts", ["2024-01-01T00:00:00", datetime(2024, 1, 1)])
def test_naive_time_is_read_as_utc(ts: Any) -> None:
    event = PredictionEvent.model_validate(_event(ts=ts))
    assert event.ts.utcoffset() == UTC.utcoffset(None)
    assert event.ts_ms() == TS_2024


@pytest.mark.parametrize("ts", ["yesterday", "", None, "2024-13-01T00:00:00Z"])
def test_unreadable_ts_is_refused(ts: Any) -> None:
    with pytest.raises(ValidationError) as info:
        PredictionEvent.model_validate(_event(ts=ts))
    assert info.value.errors()[0]["loc"] == ("ts",)


# -- features -----------------------------------------------------------------


def test_feature_values_keep_their_type() -> None:
    features = {
        "flag": True,
        "off": False,
        "amount": 12.5,
        "count": 3,
        "city": "Paris",
        "numeric_text": "1",
        "gone": None,
    }
    event = PredictionEvent.model_validate(_event(features=features))
    got = event.features
    assert got["flag"] is True
    assert got["off"] is False
    assert got["amount"] == 12.5
    assert got["count"] == 3.0
    assert type(got["count"]) is float
    assert got["city"] == "Paris"
    assert got["numeric_text"] == "1"
    assert type(got["numeric_text"]) is str
    assert got["gone"] is None
    assert "gone" in got


def test_boolean_prediction_stays_bool() -> None:
    assert PredictionEvent.model_validate(_event(prediction=True)).prediction is True
    assert PredictionEvent.model_validate(_event(prediction="fraud")).prediction == "fraud"


def test_unknown_fields_are_ignored() -> None:
    event = PredictionEvent.model_validate(_event(tenant="acme", debug={"x": 1}))
    assert not hasattr(event, "tenant")
    assert "tenant" not in event.model_dump()
    assert event.request_id == "r-1"


@pytest.mark.parametrize("field", ["model_version", "ts", "request_id", "model", "prediction"])
def test_missing_required_field_is_named(field: str) -> None:
    data = _event()
    del data[field]
    with pytest.raises(ValidationError) as info:
        PredictionEvent.model_validate(data)
    errors = info.value.errors()
    assert [e["loc"] for e in errors] == [(field,)]
    assert errors[0]["type"] == "missing"
    assert field in str(info.value)


@pytest.mark.parametrize("field", ["model", "model_version", "request_id"])
def test_empty_names_are_refused(field: str) -> None:
    with pytest.raises(ValidationError) as info:
        PredictionEvent.model_validate(_event(**{field: ""}))
    assert info.value.errors()[0]["loc"] == (field,)


@pytest.mark.parametrize("score", [math.nan, math.inf, -math.inf, "NaN", "inf"])
def test_non_finite_score_is_refused(score: Any) -> None:
    with pytest.raises(ValidationError) as info:
        PredictionEvent.model_validate(_event(score=score))
    assert info.value.errors()[0]["loc"] == ("score",)


def test_non_finite_probability_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        PredictionEvent.model_validate(_event(probabilities={"fraud": math.nan}))
    assert info.value.errors()[0]["loc"][0] == "probabilities"


def test_finite_score_and_default_variant() -> None:
    event = PredictionEvent.model_validate(_event(score=0.25))
    assert event.score == 0.25
    assert event.variant == "champion"


@pytest.mark.parametrize("variant", ["champion", "canary", "challenger", "shadow"])
def test_known_variants_are_accepted(variant: str) -> None:
    assert PredictionEvent.model_validate(_event(variant=variant)).variant == variant


@pytest.mark.parametrize("variant", ["blue", "Champion", "", None])
def test_other_variants_are_refused(variant: Any) -> None:
    with pytest.raises(ValidationError) as info:
        PredictionEvent.model_validate(_event(variant=variant))
    assert info.value.errors()[0]["loc"] == ("variant",)


def test_negative_latency_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        PredictionEvent.model_validate(_event(latency_ms=-1))
    assert info.value.errors()[0]["loc"] == ("latency_ms",)


def test_events_are_frozen() -> None:
    event = PredictionEvent.model_validate(_event())
    with pytest.raises(ValidationError):
        event.model = "other"  # type: ignore[misc]


def test_batch_parses_events_envelope() -> None:
    doc = {
        "events": [_event(request_id="a"), _event(request_id="b", ts=1_704_067_201)],
        "producer": "ignored",
    }
    batch = Batch[PredictionEvent].model_validate(doc)
    assert [e.request_id for e in batch.events] == ["a", "b"]
    assert all(isinstance(e, PredictionEvent) for e in batch.events)
    assert [e.ts_ms() for e in batch.events] == [TS_2024, TS_2024 + 1000]


def test_batch_names_the_bad_event() -> None:
    bad = _event()
    del bad["model_version"]
    with pytest.raises(ValidationError) as info:
        Batch[PredictionEvent].model_validate({"events": [_event(), bad]})
    assert info.value.errors()[0]["loc"] == ("events", 1, "model_version")


# -- JSON Schema export --------------------------------------------------------


def test_json_schemas_cover_every_public_model() -> None:
    schemas = json_schemas()
    assert set(schemas) == set(PUBLIC)
    for name, schema in schemas.items():
        assert schema["title"] == name
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert orjson.loads(orjson.dumps(schema)) == schema


def test_prediction_event_schema_lists_required_fields() -> None:
    schema = json_schemas()["PredictionEvent"]
    assert set(schema["required"]) == {"request_id", "model", "model_version", "ts", "prediction"}
    assert set(schema["properties"]["variant"]["enum"]) == {
        "champion",
        "canary",
        "challenger",
        "shadow",
    }


def test_cli_schemas_export_writes_parseable_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "schemas"
    assert cli.main(["schemas", "export", str(out)]) == 0
    written = sorted(p.name for p in out.iterdir())
    arrow = [f"{topic}.arrow-schema{ext}" for topic in ARROW_TOPICS for ext in ("", ".txt")]
    assert written == sorted([f"{name}.schema.json" for name in PUBLIC] + arrow)
    for name in PUBLIC:
        doc = orjson.loads((out / f"{name}.schema.json").read_bytes())
        assert doc["title"] == name
    assert f"wrote {len(PUBLIC)} JSON Schema files" in capsys.readouterr().out


# -- the hot-path rows agree with the models they are derived from -------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from pydantic import TypeAdapter  # noqa: E402

from schemas.events import row_type  # noqa: E402

_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
_values = st.one_of(
    _json_scalars,
    st.lists(_json_scalars, max_size=2),
    st.dictionaries(st.text(max_size=3), _json_scalars, max_size=3),
)
_fields = st.sampled_from(
    [
        "request_id",
        "model",
        "model_version",
        "ts",
        "prediction",
        "score",
        "features",
        "variant",
        "latency_ms",
        "error",
        "segment",
        "label",
        "record_id",
        "source",
        "extra",
    ]
)
_plausible = {
    "request_id": st.text(max_size=5),
    "model": st.text(max_size=5),
    "model_version": st.text(max_size=3),
    "ts": st.one_of(st.floats(0, 2e9), st.text(max_size=25)),
    "variant": st.sampled_from(["champion", "canary", "bogus"]),
    "features": st.dictionaries(st.text(max_size=3), _values, max_size=3),
}


_VALID = {
    "request_id": "r1",
    "model": "m",
    "model_version": "v1",
    "ts": 1.8e9,
    "prediction": 1,
    "score": 0.3,
    "features": {"a": 1.0, "b": "x", "c": True},
    "label": 1,
    "record_id": "x1",
    "source": "s",
    "variant": "canary",
    "latency_ms": 3.0,
    "error": False,
}


@st.composite
def _events(draw: st.DrawFn) -> dict[str, object]:
    """A valid event of every type, with some fields dropped and some replaced."""
    event = dict(_VALID)
    for key in draw(st.sets(st.sampled_from(sorted(_VALID)), max_size=3)):
        del event[key]
    for key in draw(st.sets(_fields, max_size=3)):
        event[key] = draw(_plausible.get(key, _values))
    return event


@pytest.mark.parametrize("model", [PredictionEvent, FeatureEvent, LabelEvent, TrainingRecord])
@settings(max_examples=300, deadline=None)
@given(event=_events())
def test_rows_accept_exactly_what_the_model_accepts(model: type, event: dict[str, object]) -> None:
    rows = TypeAdapter(row_type(model))
    try:
        model.model_validate(event)
        model_ok = True
    except ValidationError:
        model_ok = False
    try:
        rows.validate_python(event)
        row_ok = True
    except ValidationError:
        row_ok = False
    assert row_ok == model_ok
