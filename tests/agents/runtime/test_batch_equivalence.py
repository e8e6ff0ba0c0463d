"""A batch gives what its messages give one at a time (agents.runtime.batches).

The drift and KPI handlers' ``handle_batch`` decode a key's state once and write it
once per batch; the reports, the dead letters and the table they leave must be those
of ``handle`` called on each message in turn. The batches here are cut at random,
as the runner's would be: each one run on an Overlay of the table, then applied.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, MutableMapping
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.dev.simulate import FraudTraffic, batches
from agents.drift.handler import DriftHandler
from agents.inputs.codec import Origin
from agents.kpi.handler import KpiHandler
from agents.runtime.overlay import Overlay
from agents.runtime.runner import Outcome
from schemas.policy import parse_policy

MODEL = "fraud-detector"
T0 = 1_800_000_000 - 1_800_000_000 % 60
POLICY = parse_policy("""
drift: {window: 60s, allowed_lateness: 0s, min_reference_events: 300}
kpi: {window: 60s, allowed_lateness: 0s, label_ttl: 3m, min_labeled: 20, revision_delay: 0s}
""")

Message = tuple[bytes | None, Origin]
Handler = Any  # DriftHandler | KpiHandler


def bad_messages(topic: str) -> list[bytes]:
    """Inputs that become dead letters: not JSON, an event far ahead of the stream (the
    future bound), an event of a second model (beyond max_models=1), one invalid event."""
    ahead = FraudTraffic(seed=5).events(1, start_s=T0 + 86_400, span_s=1)
    other = [
        {**e, "model": "other-model"} for e in FraudTraffic(seed=6).events(2, start_s=T0, span_s=1)
    ]
    invalid = FraudTraffic(seed=7).events(3, start_s=T0, span_s=1)
    invalid[1] = {**invalid[1], "ts": "yesterday"}
    if topic == "labels":
        ahead = [{"request_id": "x", "model": MODEL, "ts": T0 + 86_400, "label": 1}]
        other = [{"request_id": "y", "model": "other-model", "ts": T0, "label": 1}]
        invalid = [{"request_id": "z", "model": MODEL, "ts": T0, "label": 1}, {"model": MODEL}]
    return [
        b"{not json",
        orjson.dumps({"events": ahead}),
        orjson.dumps({"events": other}),
        orjson.dumps({"events": invalid}),
    ]


def drift_messages(seed: int, bad_at: list[int]) -> list[Message]:
    traffic = FraudTraffic(seed=seed)
    raws = []
    for w in range(5):
        events = traffic.events(240, start_s=T0 + 60 * w, span_s=60, shifted=w >= 3)
        raws += list(batches(events, 30))
    for i, raw in zip(sorted(bad_at, reverse=True), bad_messages("predictions"), strict=False):
        raws.insert(i % len(raws), raw)
    return [(raw, Origin("predictions", 0, o, MODEL.encode())) for o, raw in enumerate(raws)]


def kpi_messages(seed: int, bad_at: list[int], *, shadow: bool = False) -> list[Message]:
    traffic = FraudTraffic(seed=seed)
    # with ``shadow``, a second version answers every request (variant "shadow")
    other = FraudTraffic(seed=seed + 10, version="v2", bad=True) if shadow else None
    out: list[tuple[str, bytes]] = []
    pending: list[dict[str, Any]] = []
    for w in range(6):
        preds, labels = traffic.events_with_labels(
            150, start_s=T0 + 60 * w, span_s=60, concept=w >= 3, label_delay_s=20, label_share=0.9,
            shadow=other,
        )
        pending += labels
        out += [("predictions", raw) for raw in batches(preds, 50)]
        due = sorted((e for e in pending if e["ts"] < T0 + 60 * (w + 1)), key=lambda e: e["ts"])
        pending = [e for e in pending if e["ts"] >= T0 + 60 * (w + 1)]
        out += [("labels", raw) for raw in batches(due, 40)]
    bad = [("predictions", raw) for raw in bad_messages("predictions")]
    bad += [("labels", raw) for raw in bad_messages("labels")]
    for i, item in zip(sorted(bad_at, reverse=True), bad, strict=False):
        out.insert(i % len(out), item)
    offsets = {"predictions": itertools.count(), "labels": itertools.count()}
    return [(raw, Origin(topic, 0, next(offsets[topic]), MODEL.encode())) for topic, raw in out]


def drift_handler() -> DriftHandler:
    return DriftHandler(
        policy=POLICY,
        predictions_topic="predictions",
        features_topic="features",
        max_message_bytes=1 << 22,
        max_models=1,
    )


def kpi_handler() -> KpiHandler:
    ticks = itertools.count(1_000_000, 250)  # processing time moves on with each read
    return KpiHandler(
        policy=POLICY,
        predictions_topic="predictions",
        labels_topic="labels",
        max_message_bytes=1 << 22,
        max_models=1,
        clock_ms=lambda: next(ticks),
    )


def one_at_a_time(handler: Handler, messages: list[Message]) -> tuple[list[Outcome], dict]:
    table: dict[bytes, bytes] = {}
    outcomes = [handler.handle(raw, origin, table) for raw, origin in messages]
    return outcomes, table


def in_batches(
    handler: Handler, messages: list[Message], sizes: list[int]
) -> tuple[list[Outcome], dict]:
    """``handle_batch`` on runs of ``sizes`` messages (then of 1), each on an Overlay of
    the table, applied after it, as the runner does."""
    table: dict[bytes, bytes] = {}
    outcomes: list[Outcome] = []
    rest, cuts = list(messages), list(sizes)
    while rest:
        n = cuts.pop(0) if cuts else 1
        part, rest = rest[:n], rest[n:]
        view = Overlay(table)
        done = handler.handle_batch(part, view)
        assert len(done) == len(part)
        view.apply(table)
        outcomes += done
    return outcomes, table


def as_json(outcomes: list[Outcome]) -> list[Any]:
    return [
        (
            [r.model_dump(mode="json") for r in o.reports],
            [d.model_dump(mode="json") for d in o.dead],
            o.counted,
            o.routed,
        )
        for o in outcomes
    ]


def check(make: Callable[[], Handler], messages: list[Message], sizes: list[int]) -> None:
    alone, alone_table = one_at_a_time(make(), messages)
    batched, batched_table = in_batches(make(), messages, sizes)
    assert as_json(batched) == as_json(alone)
    assert batched_table == alone_table
    assert any(o.reports for o in alone), "the scenario reports something"
    assert any(o.dead for o in alone), "and dead-letters something"


EXAMPLES = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SIZES = st.lists(st.integers(min_value=1, max_value=48), min_size=1, max_size=12)
BAD_AT = st.lists(st.integers(min_value=0, max_value=10_000), min_size=4, max_size=8)


@EXAMPLES
@given(seed=st.integers(0, 3), sizes=SIZES, bad_at=BAD_AT)
def test_drift_handler_batches_equal_one_message_at_a_time(
    seed: int, sizes: list[int], bad_at: list[int]
) -> None:
    check(drift_handler, drift_messages(seed, bad_at), sizes)


@EXAMPLES
@given(seed=st.integers(0, 3), sizes=SIZES, bad_at=BAD_AT)
def test_kpi_handler_batches_equal_one_message_at_a_time(
    seed: int, sizes: list[int], bad_at: list[int]
) -> None:
    check(kpi_handler, kpi_messages(seed, bad_at), sizes)


@EXAMPLES
@given(seed=st.integers(0, 3), sizes=SIZES, bad_at=BAD_AT)
def test_kpi_handler_batches_equal_one_message_at_a_time_with_a_shadow(
    seed: int, sizes: list[int], bad_at: list[int]
) -> None:
    check(kpi_handler, kpi_messages(seed, bad_at, shadow=True), sizes)


def test_the_shadow_scenario_compares_labeled_pairs() -> None:
    """What the property runs on pairs and labels the shadow (without the bad messages:
    one far ahead of the stream, when first, sets the stream's time past every window)."""
    clean = kpi_messages(0, [], shadow=True)
    reports = [r for o in one_at_a_time(kpi_handler(), clean)[0] for r in o.reports]
    assert any(r.shadow and r.shadow[0].labeled_pairs for r in reports)


def test_a_version_state_is_decoded_and_written_once_per_batch() -> None:
    # What batching is for: the drift state (tens of KB in the warm-up) is read and
    # written once for a batch of messages, not once per message.
    messages = drift_messages(0, [])[:20]
    handler = drift_handler()
    writes: list[bytes] = []

    class Counting(dict[bytes, bytes]):
        def __setitem__(self, key: bytes, value: bytes) -> None:
            writes.append(key)
            super().__setitem__(key, value)

    table: MutableMapping[bytes, bytes] = Counting()
    handler.handle_batch(messages, table)
    assert writes.count(f"{MODEL}@v1".encode()) == 1
