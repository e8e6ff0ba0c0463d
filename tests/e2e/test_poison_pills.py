"""End to end: messages whose dead letters cannot be sent whole never stall a partition.

Between two normal batches, a 17.5 MB predictions batch (over
DRIFTLINE_MAX_MESSAGE_BYTES, 16 MB) and a 13 MB message of broken JSON (under it)
reach the drift and KPI agents of a real worker. Their dead letters, all the raw
bytes in base64, were over the producer's maximum request (16 MB + 64 KiB): the
send raised, the agent crashed, and every later message found the poison
unrecorded, read it again and crashed again: the traffic after it was never
counted. Now each agent writes a bounded dead letter (a prefix of the raw bytes,
their full length and SHA-256, the exact topic/partition/offset), the traffic
after them is reported in full, the committed offsets reach the end of both
topics, and ``driftline deadletter fetch`` gets the original 17.5 MB back.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
)

from agents.dev import simulate
from tests.conftest import ROOT, ApacheKafka, Broker
from tests.e2e.helpers import MODEL, T0, close_windows, collect, publish

pytestmark = pytest.mark.e2e

POLICY = """
drift:
  window: 60s
  allowed_lateness: 0s
  min_reference_events: 1000
kpi:
  window: 60s
  allowed_lateness: 0s
  label_ttl: 10m
  min_labeled: 200
"""
N = 1000  # normal predictions, all in the window starting at T0


def _poison() -> tuple[bytes, bytes]:
    """A 17.5 MB batch of valid events (too big) and 13 MB of truncated JSON."""
    events = simulate.FraudTraffic(seed=41).events(500, start_s=T0, span_s=60)
    one = orjson.dumps({"events": events})
    big = orjson.dumps({"events": events * (17_500_000 // len(one) + 1)})
    broken = orjson.dumps({"events": events * (13_000_000 // len(one) + 1)})[:13_000_000]
    assert len(big) > 17_500_000 and len(broken) == 13_000_000
    return big, broken


def _allow_large(broker: Broker, topic: str) -> None:
    """A cluster that takes larger records than the worker does: only there can such
    a message reach it. The embedded broker has no limit; on Apache Kafka the topic
    the worker created allows DRIFTLINE_MAX_MESSAGE_BYTES + 64 KiB (agents.topics),
    raised here to 32 MiB."""
    if not isinstance(broker, ApacheKafka):
        return
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    resource = ConfigResource(
        "topic",
        topic,
        incremental_configs=[
            ConfigEntry("max.message.bytes", str(32 << 20),
                        incremental_operation=AlterConfigOpType.SET)
        ],
    )
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


def _produce_large(bootstrap: str, topic: str, payloads: list[bytes]) -> None:
    """The serving app that batches too much: its client allows 32 MB messages."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "message.max.bytes": 32 << 20,
            "linger.ms": 0,
            "enable.idempotence": False,
        }
    )
    errors: list[str] = []
    for payload in payloads:
        producer.produce(
            topic,
            key=MODEL.encode(),
            value=payload,
            on_delivery=lambda err, _m: err and errors.append(str(err)),
        )
        producer.flush(60)
    assert not errors, errors


def _deadletter(worker: Any, *args: str, output: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "agents",
            "deadletter",
            "fetch",
            *args,
            "--output",
            str(output),
            "--broker",
            worker.settings.bootstrap,
            "--topic-prefix",
            worker.prefix,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_poison_pills_are_dead_lettered_bounded_and_traffic_goes_on(
    worker_factory: object, broker: Broker, tmp_path: Path
) -> None:
    worker = worker_factory(POLICY, agents="drift,kpi")  # type: ignore[operator]
    bootstrap = worker.settings.bootstrap
    big, broken = _poison()
    traffic = simulate.FraudTraffic(seed=42)
    predictions, labels = traffic.events_with_labels(
        N, start_s=T0, span_s=60, label_delay_s=20.0, label_share=0.9
    )
    first, second = simulate.batches(predictions, N // 2)
    # Normal traffic first (so the agents have a redo record of this partition), then
    # the poison at offsets 1 and 2, then normal traffic again.
    publish(worker, "predictions", [first])
    worker.wait_committed("predictions", 1, timeout_s=60)
    _allow_large(broker, worker.topic("predictions"))
    _produce_large(bootstrap, worker.topic("predictions"), [big, broken])
    publish(worker, "predictions", [second])
    publish(worker, "labels", simulate.batches(labels, 500))
    # Everything so far is handled and committed, poison included (4 messages on
    # predictions, 2 on labels): before the fix, the offset stayed before the poison.
    worker.wait_committed("predictions", 4, timeout_s=180)
    worker.wait_committed("labels", 2, timeout_s=60)

    # Far-future events on both topics close the drift window and retire the KPI
    # window (past its label_ttl): their reports come out with full counts.
    close_windows(worker, T0 + 60 + 700, seed=43)
    worker.wait_committed("predictions", 5, timeout_s=60)
    worker.wait_committed("labels", 3, timeout_s=60)

    drift = collect(worker, "drift", lambda seen: len(seen) >= 1, timeout_s=60)
    assert [r["n"] for r in drift] == [N], worker.log()[-4000:]
    labeled = {e["request_id"] for e in labels}

    def retired(seen: list[dict[str, Any]]) -> bool:
        return any(r["n_labeled"] == len(labeled) for r in seen)

    kpi = collect(worker, "kpi", retired, timeout_s=60)
    assert retired(kpi), [(r["revision"], r["n_predictions"], r["n_labeled"]) for r in kpi]
    final = max(kpi, key=lambda r: r["revision"])
    assert final["n_predictions"] == N and final["n_labeled"] == len(labeled)

    letters = collect(worker, "deadletter", lambda seen: len(seen) >= 4, timeout_s=30)
    assert sorted((d["agent"], d["offset"]) for d in letters) == [
        ("drift", 1),
        ("drift", 2),
        ("kpi", 1),
        ("kpi", 2),
    ]
    for letter in letters:
        original = big if letter["offset"] == 1 else broken
        assert letter["topic"] == worker.topic("predictions") and letter["partition"] == 0
        assert letter["raw_truncated"] is True
        assert letter["raw_size"] == len(original)
        assert letter["raw_sha256"] == hashlib.sha256(original).hexdigest()
        prefix = base64.b64decode(letter["raw"])
        assert 0 < len(prefix) < len(original) and original.startswith(prefix)
        # Small enough for Apache Kafka's default message.max.bytes (1 MB).
        assert len(orjson.dumps(letter)) < 1_000_000
        why = "over the limit" if letter["offset"] == 1 else "not valid UTF-8 JSON"
        assert why in letter["error"], letter["error"]

    # The operator's view: one line per agent's letter, saying which agent wrote it.
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "agents",
            "tail",
            "deadletter",
            "--from-beginning",
            "--idle-timeout",
            "3",
            "--broker",
            bootstrap,
            "--topic-prefix",
            worker.prefix,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    ).stdout.splitlines()
    assert sorted(line.split(":")[0] for line in shown) == [
        "DEADLETTER drift",
        "DEADLETTER drift",
        "DEADLETTER kpi",
        "DEADLETTER kpi",
    ], shown
    assert all("driftline deadletter fetch" in line for line in shown), shown

    log = worker.log()
    assert worker.proc.poll() is None, f"the worker exited\n{log[-4000:]}"
    assert "Crashed reason" not in log, f"an agent crashed\n{log[-4000:]}"

    # The operator gets the original back from the input topic by the dead letter's
    # own offset on `deadletter`, verified against its length and SHA-256.
    where = next(i for i, d in enumerate(letters) if d["offset"] == 1)
    out = _deadletter(worker, "--letter", str(where), output=tmp_path / "original.bin")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "original.bin").read_bytes() == big
    assert "length and sha256 match the dead letter" in out.stderr, out.stderr
