"""The drift agent's Faust-free core (agents/drift/handler.py), on a plain dict table."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.dev.simulate import FraudTraffic, batches
from agents.drift.handler import UNVERSIONED, DriftHandler, to_batch
from agents.inputs.admission import models_key
from agents.inputs.codec import Codec, Origin
from agents.runtime import state_codec
from schemas.events import FeatureEvent, PredictionEvent
from schemas.policy import Policy, parse_policy
from streams.drift.state import PREDICTION, SCORE

MODEL = "fraud-detector"
T0 = 1_800_000_000 - 1_800_000_000 % 60  # a window boundary, epoch seconds


def _handler(policy: Policy | None = None) -> DriftHandler:
    return DriftHandler(
        policy=policy or Policy(),
        predictions_topic="predictions",
        features_topic="features",
        max_message_bytes=1 << 20,
    )


def _state(table: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """The table without driftline's own bookkeeping (``\\x00`` keys: the models tracked)."""
    return {k: v for k, v in table.items() if not k.startswith(b"\x00")}


def _origin(
    topic: str = "predictions", key: bytes | None = MODEL.encode(), offset: int = 0
) -> Origin:
    return Origin(topic=topic, partition=2, offset=offset, key=key)


def _events(
    n: int, *, seed: int = 1, start_s: float = T0, span_s: float = 60.0, **traffic: Any
) -> list[dict[str, Any]]:
    return FraudTraffic(seed=seed, **traffic).events(n, start_s=start_s, span_s=span_s)


def _message(events: list[dict[str, Any]]) -> bytes:
    (raw,) = list(batches(events, len(events)))
    return raw


def test_events_are_counted_into_the_version_state() -> None:
    table: dict[bytes, bytes] = {}
    out = _handler().handle(_message(_events(40)), _origin(), table)
    assert out.counted == 40
    assert out.dead == []
    assert out.reports == []
    assert list(_state(table)) == [b"fraud-detector@v1"]
    state = state_codec.loads(table[b"fraud-detector@v1"])
    assert (state["model"], state["model_version"]) == (MODEL, "v1")
    assert sum(w["n"] for w in state["windows"].values()) == 40
    assert state["watermark_ms"] == int((T0 + 39 * 1.5) * 1000)
    assert {SCORE, PREDICTION, "amount", "channel"} <= set(state["kinds"])


def test_state_accumulates_across_messages() -> None:
    table: dict[bytes, bytes] = {}
    handler = _handler()
    events = _events(90)
    for i, raw in enumerate(batches(events, 30)):
        assert handler.handle(raw, _origin(offset=i), table).counted == 30
    state = state_codec.loads(table[b"fraud-detector@v1"])
    assert sum(w["n"] for w in state["windows"].values()) == 90


def test_event_for_another_model_is_dead_lettered() -> None:
    mine = _events(3)
    other = _events(1, seed=2, model="churn-model")[0]
    raw = _message([mine[0], other, mine[1], mine[2]])
    table: dict[bytes, bytes] = {}
    out = _handler().handle(raw, _origin(offset=77), table)

    assert out.counted == 3
    (dead,) = out.dead
    assert dead.index == 1
    assert "'churn-model'" in dead.error
    assert f"message key is '{MODEL}'" in dead.error
    assert (dead.topic, dead.partition, dead.offset, dead.key) == ("predictions", 2, 77, MODEL)
    assert dead.agent == "drift"
    assert dead.event["request_id"] == other["request_id"]
    assert orjson.loads(base64.b64decode(dead.raw))["model"] == "churn-model"
    assert list(_state(table)) == [b"fraud-detector@v1"]  # nothing tracked for the other model
    assert table[models_key(2)] == b'["fraud-detector"]'
    state = state_codec.loads(table[b"fraud-detector@v1"])
    assert sum(w["n"] for w in state["windows"].values()) == 3


def test_without_a_key_every_model_is_tracked() -> None:
    events = _events(5) + _events(4, seed=2, model="churn-model", version="v3")
    table: dict[bytes, bytes] = {}
    out = _handler().handle(_message(events), _origin(key=None), table)
    assert out.counted == 9
    assert out.dead == []
    assert sorted(_state(table)) == [b"churn-model@v3", b"fraud-detector@v1"]


def test_versions_are_tracked_apart() -> None:
    events = _events(6, version="v1") + _events(4, seed=2, version="v2")
    table: dict[bytes, bytes] = {}
    out = _handler().handle(_message(events), _origin(), table)
    assert out.counted == 10
    counts = {
        k: sum(w["n"] for w in state_codec.loads(v)["windows"].values())
        for k, v in _state(table).items()
    }
    assert counts == {b"fraud-detector@v1": 6, b"fraud-detector@v2": 4}


def test_feature_events_without_version_are_unversioned() -> None:
    base = {"model": MODEL, "ts": T0 + 1, "features": {"amount": 12.5, "channel": "web"}}
    events = [
        {**base, "request_id": "f1"},
        {**base, "request_id": "f2", "model_version": "v2"},
        {**base, "request_id": "f3"},
    ]
    table: dict[bytes, bytes] = {}
    out = _handler().handle(orjson.dumps({"events": events}), _origin("features"), table)
    assert out.counted == 3
    assert UNVERSIONED == "unversioned"
    assert sorted(_state(table)) == [b"fraud-detector@unversioned", b"fraud-detector@v2"]
    state = state_codec.loads(table[b"fraud-detector@unversioned"])
    assert state["model_version"] == "unversioned"
    assert state["kinds"] == {"amount": "numeric", "channel": "categorical"}  # no outputs
    assert sum(w["n"] for w in state["windows"].values()) == 2


def test_undecodable_message_leaves_the_table_alone() -> None:
    table: dict[bytes, bytes] = {b"keep": b"me"}
    raw = b'{"events": [{"request_id": "r1"'
    out = _handler().handle(raw, _origin(offset=5), table)
    assert out.counted == 0
    assert out.reports == []
    (dead,) = out.dead
    assert base64.b64decode(dead.raw) == raw
    assert dead.offset == 5
    assert table == {b"keep": b"me"}


def test_invalid_and_wrong_key_events_together() -> None:
    events = _events(3)
    bad = dict(events[0], ts="yesterday")
    other = _events(1, seed=2, model="churn-model")[0]
    out = _handler().handle(_message([bad, events[1], other, events[2]]), _origin(), {})
    assert out.counted == 2
    invalid, wrong_key = out.dead
    assert invalid.index == 0
    assert "ts:" in invalid.error
    assert invalid.event == bad
    # The wrong-key letter names the event's position in the batch, not among valid events.
    assert wrong_key.index == 2
    assert "event 2 of the message" in wrong_key.error
    assert wrong_key.event["request_id"] == other["request_id"]
    assert "churn-model" in wrong_key.error


def test_shift_is_reported_after_the_warm_up() -> None:
    policy = parse_policy("drift: {window: 60s, allowed_lateness: 0s, min_reference_events: 1000}")
    handler = _handler(policy)
    traffic = FraudTraffic(seed=3)
    table: dict[bytes, bytes] = {}
    reports = []
    for i, shifted in enumerate([False, False, True]):
        events = traffic.events(3000, start_s=T0 + 60 * i, span_s=60, shifted=shifted)
        for j, raw in enumerate(batches(events, 500)):
            out = handler.handle(raw, _origin(offset=10 * i + j), table)
            assert out.dead == []
            reports.extend(out.reports)
    closer = traffic.events(1, start_s=T0 + 180, span_s=1)
    reports.extend(handler.handle(_message(closer), _origin(offset=99), table).reports)

    assert [r.n for r in reports] == [3000, 3000, 3000]
    warmup, clean, shifted_report = reports
    assert warmup.features == {}
    assert clean.status == "ok"
    assert len(clean.features) == 25
    assert set(clean.prediction) == {"score", "class"}
    assert shifted_report.status == "drift"
    assert {"amount", "distance_from_home_km"} <= set(shifted_report.drifted_features)
    assert {n for n, f in shifted_report.features.items() if f.drifted} == {
        "amount",
        "distance_from_home_km",
    }


def test_hopping_windows_through_the_table() -> None:
    """``drift.hop``: panes in the table, one report per hop, each event in two windows."""
    policy = parse_policy(
        "drift: {window: 120s, hop: 60s, allowed_lateness: 0s, min_reference_events: 1000}")
    handler = _handler(policy)
    traffic = FraudTraffic(seed=4)
    table: dict[bytes, bytes] = {}
    reports = []
    for i, shifted in enumerate([False, False, False, True, True]):
        events = traffic.events(1500, start_s=T0 + 60 * i, span_s=60, shifted=shifted)
        for j, raw in enumerate(batches(events, 500)):
            out = handler.handle(raw, _origin(offset=10 * i + j), table)
            assert out.dead == []
            reports.extend(out.reports)
            panes = state_codec.loads(table[b"fraud-detector@v1"])["windows"]
            assert len(panes) <= handler.monitor(MODEL).max_panes
    closer = traffic.events(1, start_s=T0 + 600, span_s=1)
    reports.extend(handler.handle(_message(closer), _origin(offset=99), table).reports)

    starts = [int(r.window_start.timestamp()) for r in reports]
    assert starts == [T0 + 60 * k for k in range(-1, 5)]
    assert [r.n for r in reports] == [1500, 3000, 3000, 3000, 3000, 1500]
    assert sum(r.n for r in reports) == 2 * 5 * 1500
    # the window of minutes 0-1 completes the warm-up with minute 0 alone (1,500 events)
    assert reports[0].reference.n == 0 and reports[1].reference.n == 1500
    assert any("completes the warm-up" in note for note in reports[1].notes)
    judged = {int(r.window_start.timestamp()) - T0: r for r in reports[2:]}
    assert judged[60].status == "ok"  # minutes 1-2, before the shift
    assert judged[120].status in ("warn", "drift")  # minute 3 shifted
    assert {"amount", "distance_from_home_km"} <= set(judged[180].drifted_features)


def test_policy_override_per_model() -> None:
    policy = parse_policy("models: {fraud-detector: {drift: {window: 10s}}}")
    handler = _handler(policy)
    assert handler.monitor(MODEL).policy.window == 10_000
    assert handler.monitor("other").policy.window == Policy().drift.window
    assert handler.monitor(MODEL) is handler.monitor(MODEL)
    table: dict[bytes, bytes] = {}
    handler.handle(_message(_events(30, span_s=30.0)), _origin(), table)
    state = state_codec.loads(table[b"fraud-detector@v1"])
    assert sorted(int(k) for k in state["windows"]) == [(T0 + 10 * i) * 1000 for i in range(3)]


@pytest.mark.parametrize("prediction", [True, "fraud", 1])
def test_to_batch_adds_score_and_prediction(prediction: Any) -> None:
    def row(model: Any, event: dict[str, Any]) -> Any:
        codec = Codec(model, max_message_bytes=1 << 20, agent="drift")
        return codec.decode(orjson.dumps(event), Origin("t", 0, 0)).events[0]

    event = row(
        PredictionEvent,
        {
            "request_id": "r",
            "model": "m",
            "model_version": "v",
            "ts": T0,
            "score": 0.25,
            "prediction": prediction,
            "features": {"a": 1.0, "b": None},
        },
    )
    feature = row(
        FeatureEvent, {"request_id": "s", "model": "m", "ts": T0 + 1, "features": {"c": "x"}}
    )
    batch = to_batch([event, feature])
    assert batch.ts_ms.tolist() == [T0 * 1000, (T0 + 1) * 1000]
    assert list(batch.columns[SCORE]) == [0.25, None]
    assert list(batch.columns[PREDICTION]) == [event["prediction"], None]
    assert list(batch.columns["a"]) == [1.0, None]
    assert list(batch.columns["c"]) == [None, "x"]


T0_MID = 1_800_000_000 - 1_800_000_000 % 60


class _Stream:
    """A DriftHandler fed whole-minute windows of simulated traffic, and a profile."""

    def __init__(self, policy_text: str, seed: int) -> None:
        from agents.dev import simulate

        self.policy = parse_policy(policy_text)
        self.handler = DriftHandler(
            policy=self.policy,
            predictions_topic="p",
            features_topic="f",
            max_message_bytes=1 << 24,
            references_topic="r",
        )
        self.traffic = simulate.FraudTraffic(seed=seed)
        self.table: dict[bytes, bytes] = {}
        self.reports: list[Any] = []
        self.offset = 0

    def send(self, n: int, start_s: float, span_s: float) -> None:
        events = self.traffic.events(n, start_s=T0_MID + start_s, span_s=span_s)
        self.offset += 1
        out = self.handler.handle(
            orjson.dumps({"events": events}),
            Origin("p", 0, self.offset, b"fraud-detector"),
            self.table,
        )
        assert out.dead == [], out.dead[0].error
        self.reports.extend(out.reports)

    def publish_profile(self, tmp_path: Path, policy: Any) -> None:
        from agents.dev import simulate
        from agents.operator import reference_build

        history = simulate.FraudTraffic(seed=9).events(5000, start_s=0, span_s=3600)
        path = tmp_path / "train.jsonl"
        path.write_bytes(b"\n".join(orjson.dumps(e["features"]) for e in history))
        profile = reference_build.build(path, model="fraud-detector", version="v1", policy=policy)
        self.handler.handle(profile.model_dump_json().encode(), Origin("r", 0, 0, b"x"), self.table)


def test_a_profile_published_mid_stream_applies_from_the_next_window(tmp_path: Path) -> None:
    """Open windows were counted on the warm-up reference's bins: they are judged on
    it; later windows on the profile (whose bins differ: here 50 fine bins, not 100).
    Before this was handled every later message of the version failed."""
    stream = _Stream(
        "drift: {window: 60s, allowed_lateness: 0s, min_reference_events: 1000}", seed=1
    )
    stream.send(2000, 0, 60)
    stream.send(2000, 60, 60)  # window 0 closes: the warm-up reference; window 1 is open
    stream.publish_profile(tmp_path, parse_policy("drift: {fine_bins: 50}").drift_for("x"))
    for w in range(2, 5):
        stream.send(2000, 60 * w, 60)
    reports = stream.reports
    kinds = {r.window_start.timestamp() - T0_MID: r.reference.kind for r in reports}
    assert kinds == {0: "warmup", 60: "warmup", 120: "profile", 180: "profile"}
    assert all(r.status == "ok" for r in reports[1:]), [r.drifted_features for r in reports]
    assert b"fraud-detector@v1#reference#previous" not in stream.table  # dropped once unused


def test_a_profile_arriving_during_the_warm_up_judges_from_the_next_window(tmp_path: Path) -> None:
    """Windows open during the warm-up were counted without bins: reported, not judged
    (a sketch cannot place discrete values that sit on the profile's bin edges; judging
    them flagged txn_count_24h and shipping_days with PSI above 0.7)."""
    stream = _Stream(
        "drift: {window: 60s, allowed_lateness: 0s, min_reference_events: 100000}", seed=2
    )
    stream.send(1000, 0, 30)  # window 0 opens during the warm-up
    stream.publish_profile(tmp_path, stream.policy.drift_for("fraud-detector"))
    for w, part in [(0, 1), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0)]:
        stream.send(1000, 60 * w + 30 * part, 30)
    reports = stream.reports
    by_start = {int(r.window_start.timestamp()) - T0_MID: r for r in reports}
    assert sorted(by_start) == [0, 60, 120]
    first = by_start[0]
    assert first.status == "ok" and any("reported, not judged" in n for n in first.notes)
    assert all(r.status == "ok" and r.reference.kind == "profile" for r in reports), [
        (r.window_start, r.drifted_features) for r in reports
    ]
    assert not any("reported, not judged" in n for n in by_start[60].notes)
