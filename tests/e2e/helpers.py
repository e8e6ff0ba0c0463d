"""What the end-to-end tests repeat around a real worker (tests/conftest.py's
``worker_factory``): publishing a model's messages to its input topics, the
far-future events that close every window, reading its reports, and a trusted set
for the poisoning guard."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from agents.dev import simulate
from agents.operator import reference_build, tail
from schemas.policy import parse_policy
from schemas.reference import ReferenceProfile
from tests.conftest import WorkerProcess

MODEL = "fraud-detector"
#: a window boundary (of 60-s windows), far from any real clock
T0 = 1_800_000_000 - 1_800_000_000 % 60


def publish(
    worker: WorkerProcess,
    topic: str,
    payloads: Iterable[bytes],
    *,
    model: str = MODEL,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    """Send ``payloads`` to the worker's ``topic`` (without its prefix), keyed by
    ``model``, and wait until the broker has them all."""
    producer = _producer(worker.settings.bootstrap)
    simulate.publish(producer, worker.topic(topic), model, list(payloads), headers=headers)


@functools.lru_cache(maxsize=4)
def _producer(bootstrap: str) -> Producer:
    """One producer per broker for the test process (``simulate.publish`` flushes it)."""
    return simulate.make_producer(bootstrap)


def close_windows(
    worker: WorkerProcess,
    end_s: float,
    *,
    labels: bool = True,
    seed: int = 9,
    model: str = MODEL,
) -> None:
    """One prediction at ``end_s`` (and, with ``labels``, one label): past every window
    and label TTL before it, they close every drift window and retire every KPI window
    (its last revision then holds all of its labels), however the worker interleaves
    the two topics."""
    closer = simulate.FraudTraffic(seed=seed).events(1, start_s=end_s, span_s=1)
    publish(worker, "predictions", [orjson.dumps({"events": closer})], model=model)
    if labels:
        label = {"request_id": "closer", "model": model, "ts": end_s, "label": 0}
        publish(worker, "labels", [orjson.dumps(label)], model=model)


def collect(
    worker: WorkerProcess,
    topic: str,
    predicate: Callable[[list[dict[str, Any]]], bool],
    *,
    timeout_s: float,
) -> list[dict[str, Any]]:
    """The worker's ``topic`` from its start until ``predicate(all_values)`` holds or
    the deadline (``agents.operator.tail.collect``); the caller asserts on them."""
    return tail.collect(
        worker.settings.bootstrap, worker.topic(topic), predicate, timeout_s=timeout_s
    )


def trusted_profile(
    tmp_path: Path,
    rows: list[dict[str, Any]],
    *,
    policy: str,
    trusted_rows: int,
    model: str = MODEL,
) -> ReferenceProfile:
    """The reference profile (with its trusted set) that ``driftline reference build``
    makes of training ``rows`` (each with ``features`` and ``label``), version v1."""
    data = tmp_path / "train.jsonl"
    data.write_bytes(b"\n".join(orjson.dumps({**r["features"], "label": r["label"]}) for r in rows))
    return reference_build.build(
        data,
        model=model,
        version="v1",
        policy=parse_policy(policy).drift_for(model),
        trusted_rows=trusted_rows,
    )


def iso(epoch_s: float) -> str:
    """A report's ``window_start`` to the second (``2027-01-15T08:00:00``)."""
    return datetime.fromtimestamp(epoch_s, tz=UTC).isoformat()[:19]
