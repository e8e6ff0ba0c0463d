"""The simulated serving app publishes predictions and, later, their labels."""

from __future__ import annotations

import orjson

from agents import simulate, tail
from agents.broker import EmbeddedBroker
from agents.config import Settings
from agents.topics import ensure_topics


def test_run_publishes_labels_after_their_predictions(broker: EmbeddedBroker) -> None:
    settings = Settings(broker=broker.bootstrap, topic_prefix="sim-labels.")
    ensure_topics(settings)
    sent = simulate.run(
        bootstrap=broker.bootstrap, topic=settings.topic("predictions"), rate=5000,
        duration_s=1.5, time_scale=100.0, labels_topic=settings.topic("labels"),
        label_delay_s=2.0, label_share=0.9, scenario="concept", shift_at=0.5,
    )

    def read(topic: str, expected: int | None) -> list[dict[str, object]]:
        events: list[dict[str, object]] = []

        def done(seen: list[dict[str, object]]) -> bool:
            events[:] = [e for m in seen for e in m["events"]]  # type: ignore[attr-defined]
            return expected is not None and len(events) >= expected

        tail.collect(broker.bootstrap, settings.topic(topic), done,
                     timeout_s=10 if expected is not None else 3)
        return events

    predictions = read("predictions", sent)
    labels = read("labels", None)
    assert len(predictions) == sent
    by_id = {p["request_id"]: p for p in predictions}
    assert 0.8 * sent <= len(labels) <= 0.95 * sent  # 90 % labeled, a few still in flight
    assert len({lab["request_id"] for lab in labels}) == len(labels)
    for label in labels:
        prediction = by_id[label["request_id"]]
        assert label["ts"] >= prediction["ts"]  # type: ignore[operator]
        assert label["label"] in (0, 1)
    assert orjson.dumps(labels[0])  # plain JSON values
