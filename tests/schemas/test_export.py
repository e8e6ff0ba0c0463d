"""`driftline schemas export` writes the Arrow schema of each input topic with an Arrow
form (schemas/export.py): serialised for producers' Arrow libraries, and as text."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from agents import cli
from schemas import arrow
from schemas.export import ARROW_TOPICS, arrow_schema, arrow_schemas

_ROWS: dict[str, list[dict[str, Any]]] = {
    "predictions": [
        {
            "request_id": "r1",
            "model": "m",
            "model_version": "v1",
            "ts": datetime(2027, 1, 15, 8, 0, 0, 123000, tzinfo=UTC),
            "prediction": 1.0,
            "score": 0.9,
            "probabilities": {"fraud": 0.9, "ok": 0.1},
            "features": {
                "amount": 12.5,
                "txn_count_1h": 3,
                "merchant_category": "gaming",
                "country": "DE",
                "is_new_device": True,
            },
            "variant": "canary",
            "latency_ms": 3.5,
            "error": False,
            "segment": {"country": "DE"},
        },
        {
            "request_id": "r2",
            "model": "m",
            "model_version": "v1",
            "ts": datetime(2027, 1, 15, 8, 0, 1, tzinfo=UTC),
            "prediction": 0.0,
            "features": {
                "amount": None,
                "txn_count_1h": 0,
                "merchant_category": "fuel",
                "country": None,
                "is_new_device": False,
            },
        },
    ],
    "features": [
        {
            "request_id": "r1",
            "model": "m",
            "ts": datetime(2027, 1, 15, tzinfo=UTC),
            "features": {
                "amount": 1.0,
                "txn_count_1h": 1,
                "merchant_category": "fuel",
                "country": "FR",
                "is_new_device": False,
            },
        },
    ],
    "labels": [
        {"request_id": "r1", "model": "m", "ts": datetime(2027, 1, 16, tzinfo=UTC), "label": 1.0},
    ],
}


def test_cli_writes_each_input_topic_s_arrow_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["schemas", "export", str(tmp_path)]) == 0
    assert "Arrow schemas of predictions, features, labels" in capsys.readouterr().out
    for topic, model in ARROW_TOPICS.items():
        written = pa.ipc.read_schema(
            pa.py_buffer((tmp_path / f"{topic}.arrow-schema").read_bytes())
        )
        assert written.equals(arrow_schemas()[topic])
        assert written.names == list(model.model_fields)  # the JSON names, every field
        assert written.field("ts").type == pa.timestamp("ms", tz="UTC")
        required = {n for n, info in model.model_fields.items() if info.is_required()}
        assert {f.name for f in written if not f.nullable} == required
        if topic != "labels":  # the children are the producer's
            assert written.field("features").type == pa.struct([])
        text = (tmp_path / f"{topic}.arrow-schema.txt").read_text()
        header = [line for line in text.splitlines() if line.startswith("#")]
        assert text.startswith("# Arrow schema of") and len(header) >= 6
        assert "naive = UTC" in text and "epoch seconds" in text
        assert str(arrow_schema(model, samples=True)) in text
        if topic != "labels":
            assert "dictionary<string>" in text and "boolean" in text
            assert "merchant_category: dictionary<values=string" in text  # a sample child


def test_labels_schema_has_no_features() -> None:
    assert arrow_schemas()["labels"].names == ["request_id", "model", "ts", "label"]
    assert arrow_schemas()["labels"].field("label").type == pa.float64()


@pytest.mark.parametrize("topic", list(ARROW_TOPICS))
def test_messages_written_with_the_exported_schema_are_valid_events(topic: str) -> None:
    """What a producer writes with the schema (its own features in the struct) is read
    back by driftline's Arrow form as the same events."""
    model = ARROW_TOPICS[topic]
    schema = arrow_schema(model, samples=True)
    table = pa.Table.from_pylist(_ROWS[topic], schema=schema)
    rows = arrow.rows(arrow.read(arrow.to_ipc(table)))
    assert len(rows) == len(_ROWS[topic])
    for sent, got in zip(_ROWS[topic], rows, strict=True):
        event = model.model_validate(got)
        expected = model.model_validate({k: v for k, v in sent.items() if v is not None})
        assert event == expected
