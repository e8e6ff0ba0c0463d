"""Consecutive messages of a version counted as one batch (agents.drift.handler._Run).

The drift handler counts a run of messages at once while counting them one at a
time would close no window in between. These tests feed it traffic that tries to
tell the two apart: events out of order across messages (within the allowed
lateness), hopping windows, categories first seen in later messages, Arrow and
JSON messages mixed, a feature that only later messages carry, and a reference
profile published mid-stream. Reports, dead letters, counts and the table's
bytes must be those of one message at a time, whatever the batches.
"""

from __future__ import annotations

import functools
import random
import tempfile
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.dev.simulate import FraudTraffic, encode
from agents.drift.handler import DriftHandler
from agents.inputs.codec import Origin
from agents.operator import reference_build
from schemas.policy import parse_policy
from streams.drift.monitor import DriftMonitor
from tests.agents.runtime.test_batch_equivalence import as_json, in_batches, one_at_a_time

MODEL = "fraud-detector"
T0 = 1_800_000_000 - 1_800_000_000 % 60
POLICY = parse_policy("""
drift: {window: 60s, hop: 30s, allowed_lateness: 20s, min_reference_events: 300}
""")

Message = tuple[bytes | None, Origin]


def handler() -> DriftHandler:
    return DriftHandler(
        policy=POLICY,
        predictions_topic="predictions",
        features_topic="features",
        references_topic="references",
        max_message_bytes=1 << 22,
    )


def traffic(seed: int, forms: str = "mixed") -> list[Message]:
    rng = random.Random(seed)
    gen = FraudTraffic(seed=seed)
    events: list[dict[str, Any]] = []
    for w in range(6):
        window = gen.events(200, start_s=T0 + 60 * w, span_s=60, shifted=w >= 4)
        for i, e in enumerate(window):
            if w >= 2 and i % 7 == 0:  # categories first seen later, rare ones
                e["features"] = {**e["features"], "channel": f"kiosk-{rng.randrange(40)}"}
            if w >= 3:  # a feature only later messages carry
                e["features"] = {**e["features"], "basket_value": rng.lognormvariate(3, 1)}
        events += window
    # out of order within 15 s: never beyond the allowed lateness of 20 s
    events.sort(key=lambda e: e["ts"] + rng.uniform(0, 15))
    raws: list[tuple[str, bytes]] = []
    for i in range(0, len(events), 10):  # ten messages a pane
        form = "arrow" if forms == "arrow" or (i // 10) % 3 == 0 else "json"
        raws += [("predictions", raw) for raw in encode(events[i : i + 10], 10, form=form)]
    raws.insert(len(raws) * 2 // 3, ("references", profile()))
    return [(raw, Origin(topic, 0, o, MODEL.encode())) for o, (topic, raw) in enumerate(raws)]


@functools.cache
def profile() -> bytes:
    """A reference profile built from shifted traffic (``driftline reference build``)."""
    events = FraudTraffic(seed=99).events(600, start_s=T0, span_s=60, shifted=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reference.jsonl"
        path.write_bytes(b"\n".join(orjson.dumps(e["features"]) for e in events))
        built = reference_build.build(path, model=MODEL, version="v1", policy=POLICY.drift)
    return built.model_dump_json().encode()


@settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 3),
    forms=st.sampled_from(["mixed", "arrow"]),
    sizes=st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=10),
)
def test_runs_give_what_one_message_at_a_time_gives(
    seed: int, forms: str, sizes: list[int]
) -> None:
    """Arrow messages in a row are also read as one table (``ArrowLane.decode_many``)."""
    messages = traffic(seed, forms)
    alone, alone_table = one_at_a_time(handler(), messages)
    batched, batched_table = in_batches(handler(), messages, sizes)
    assert as_json(batched) == as_json(alone)
    assert batched_table == alone_table
    assert sum(len(o.reports) for o in alone) >= 8, "the scenario closes windows"
    profiles = [o for (_, origin), o in zip(messages, alone, strict=True)
                if origin.topic == "references"]
    assert [(p.counted, p.dead) for p in profiles] == [(1, [])], "and switches its reference"


def test_a_run_is_counted_in_one_call(monkeypatch: Any) -> None:
    """Steady traffic in one batch: about two ``update`` calls per pane closed (the run
    before the message that closes it, and that message), not one per message."""
    calls = []
    update = DriftMonitor.update

    def counting(self: DriftMonitor, state: Any, batch: Any) -> Any:
        calls.append(len(batch))
        return update(self, state, batch)

    monkeypatch.setattr(DriftMonitor, "update", counting)
    gen = FraudTraffic(seed=1)
    events = [e for w in range(4) for e in gen.events(400, start_s=T0 + 60 * w, span_s=60)]
    messages = [
        (raw, Origin("predictions", 0, o, MODEL.encode()))
        for o, raw in enumerate(encode(events, 20, form="arrow"))
    ]
    outcomes = handler().handle_batch(messages, {})
    assert sum(o.counted for o in outcomes) == len(events) == sum(calls)
    assert len(messages) == 80 and len(calls) <= 20, calls  # 4 windows, 8 panes
