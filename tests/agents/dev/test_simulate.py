"""The simulated serving app publishes predictions and, later, their labels, as JSON
batches or as Arrow IPC streams (``--format arrow``) holding the same events."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from agents.config import Settings
from agents.dev import simulate
from agents.dev.broker import EmbeddedBroker
from agents.operator import tail
from agents.topics import ensure_topics
from schemas import arrow
from schemas.events import LabelEvent, PredictionEvent, event_time_ms


def _decode(value: bytes, form: str) -> list[dict[str, Any]]:
    if form == "arrow":
        return arrow.rows(arrow.read(value))
    events: list[dict[str, Any]] = orjson.loads(value)["events"]
    return events


@pytest.mark.parametrize("form", simulate.FORMS)
def test_run_publishes_labels_after_their_predictions(broker: EmbeddedBroker, form: str) -> None:
    settings = Settings(broker=broker.bootstrap, topic_prefix=f"sim-labels-{form}.")
    ensure_topics(settings)
    sent = simulate.run(
        bootstrap=broker.bootstrap,
        topic=settings.topic("predictions"),
        rate=5000,
        duration_s=1.5,
        time_scale=100.0,
        labels_topic=settings.topic("labels"),
        label_delay_s=2.0,
        label_share=0.9,
        scenario="concept",
        shift_at=0.5,
        form=form,
    )

    def read(topic: str, expected: int | None) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for msg in tail.messages(
            broker.bootstrap,
            settings.topic(topic),
            idle_timeout_s=10 if expected is not None else 3,
        ):
            # an Arrow message says so in its header; a JSON one has none
            assert (msg.headers() or []) == (simulate.headers(form) or []), msg.headers()
            assert arrow.is_arrow(msg.value()) == (form == "arrow")
            events += _decode(msg.value(), form)
            if expected is not None and len(events) >= expected:
                break
        return events

    predictions = read("predictions", sent)
    labels = read("labels", None)
    assert len(predictions) == sent
    by_id = {p["request_id"]: PredictionEvent.model_validate(p) for p in predictions}
    assert len(by_id) == sent
    assert 0.8 * sent <= len(labels) <= 0.95 * sent  # 90 % labeled, a few still in flight
    assert len({lab["request_id"] for lab in labels}) == len(labels)
    for raw in labels:
        label = LabelEvent.model_validate(raw)
        prediction = by_id[label.request_id]
        assert label.ts >= prediction.ts
        assert label.label in (0, 1)
        assert len(prediction.features) == 25
    assert orjson.dumps(labels[0])  # plain JSON values (a datetime for an Arrow ts)


def test_arrow_messages_hold_the_json_form_s_events() -> None:
    predictions, labels = simulate.FraudTraffic(seed=4).events_with_labels(
        1100, start_s=1_800_000_000.0, span_s=60.0, label_share=0.5
    )
    for events, model in ((predictions, PredictionEvent), (labels, LabelEvent)):
        as_json = [e for m in simulate.encode(events, 500) for e in _decode(m, "json")]
        messages = list(simulate.encode(events, 500, form="arrow"))
        assert [arrow.read(m).num_rows for m in messages] == [
            len(orjson.loads(m)["events"]) for m in simulate.encode(events, 500)
        ]
        as_arrow = [e for m in messages for e in _decode(m, "arrow")]
        assert len(as_arrow) == len(as_json) == len(events)
        for j, a in zip(as_json, as_arrow, strict=True):
            assert model.model_validate(a) == model.model_validate(j)
            # the same values, field by field; the time as a timestamp of the same millisecond
            assert event_time_ms(a.pop("ts")) == event_time_ms(j.pop("ts"))
            assert a == j


def test_an_unknown_form_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown form 'avro'"):
        list(simulate.encode([], 500, form="avro"))
