"""End to end: the real worker on the broker turns a shift into a DriftReport."""

from __future__ import annotations

import base64
import subprocess
import sys

import orjson
import pytest

from agents.dev import simulate
from agents.operator import tail
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

POLICY = """
drift:
  window: 60s
  allowed_lateness: 0s
  min_reference_events: 1000
"""
T0 = 1_800_000_000 - 1_800_000_000 % 60  # a window boundary
PER_WINDOW = 3000
BAD_BATCH = b'{"events": [{"request_id": "r1", "model": "fraud-detector"'  # truncated JSON


def _window(traffic: simulate.FraudTraffic, index: int, *, shifted: bool) -> list[bytes]:
    events = traffic.events(PER_WINDOW, start_s=T0 + 60 * index, span_s=60, shifted=shifted)
    return list(simulate.batches(events, 500))


def test_shift_is_flagged_and_bad_input_dead_lettered(worker_factory: object) -> None:
    worker = worker_factory(POLICY)  # type: ignore[operator]
    traffic = simulate.FraudTraffic(seed=3)
    messages = _window(traffic, 0, shifted=False)  # the warm-up reference

    # Window 1: clean traffic, plus a malformed message and an invalid event
    # inside one batch: both dead-lettered, the batch's 500 valid events counted.
    window1 = _window(traffic, 1, shifted=False)
    batch = orjson.loads(window1[2])
    invalid = dict(batch["events"][0], request_id="bad-1")
    del invalid["model_version"]
    batch["events"].insert(2, invalid)
    window1[2] = orjson.dumps(batch)
    messages += [*window1[:3], BAD_BATCH, *window1[3:]]

    messages += _window(traffic, 2, shifted=True) + _window(traffic, 3, shifted=True)
    # One event in window 4 moves the watermark past windows 0-3 and closes them.
    closer = traffic.events(1, start_s=T0 + 4 * 60 + 1, span_s=1)
    messages += list(simulate.batches(closer, 500))

    producer = simulate.make_producer(worker.settings.bootstrap)
    simulate.publish(producer, worker.topic("predictions"), "fraud-detector", messages)

    reports = tail.collect(
        worker.settings.bootstrap, worker.topic("drift"), lambda seen: len(seen) >= 4, timeout_s=90
    )
    assert len(reports) == 4, f"expected 4 reports, got {len(reports)}; log:\n{worker.log()}"
    by_start = {r["window_start"]: r for r in reports}
    starts = sorted(by_start)
    warmup, clean, shifted_a, shifted_b = (by_start[s] for s in starts)

    assert warmup["features"] == {} and warmup["n"] == PER_WINDOW
    assert "warm-up reference" in warmup["notes"][0]

    assert clean["n"] == PER_WINDOW, "the valid events of the batch with a bad one are counted"
    assert clean["status"] == "ok", clean["drifted_features"]
    assert clean["reference"]["kind"] == "warmup"
    assert len(clean["features"]) == 25

    for report in (shifted_a, shifted_b):
        flagged = {n for n, f in report["features"].items() if f["status"] != "ok"}
        assert flagged == set(simulate.SHIFTED), report["drifted_features"]
        assert report["status"] == "drift"
        for name in simulate.SHIFTED:
            assert report["features"][name]["drifted"]
            assert report["features"][name]["reason"].startswith("PSI ")
        # The score depends on both features, so the prediction drifts too.
        assert report["prediction"]["score"]["status"] != "ok"

    letters = tail.collect(
        worker.settings.bootstrap,
        worker.topic("deadletter"),
        lambda seen: len(seen) >= 2,
        timeout_s=30,
    )
    assert len(letters) == 2
    whole = next(d for d in letters if d["index"] is None)
    assert base64.b64decode(whole["raw"]) == BAD_BATCH
    assert "not valid UTF-8 JSON" in whole["error"]
    one = next(d for d in letters if d["index"] is not None)
    assert one["index"] == 2 and "model_version" in one["error"]
    assert orjson.loads(base64.b64decode(one["raw"]))["request_id"] == "bad-1"
    assert worker.proc.poll() is None, "the worker keeps running after bad input"

    # The operator's view of the same topic.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "agents",
            "tail",
            "drift",
            "--broker",
            worker.settings.bootstrap,
            "--topic-prefix",
            worker.prefix,
            "--from-beginning",
            "--idle-timeout",
            "3",
            "--status",
            "drift",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and all("DRIFT" in line and "amount" in line for line in lines)


def test_a_published_reference_profile_is_used_from_the_first_window(
    worker_factory: object, tmp_path: object
) -> None:
    worker = worker_factory(POLICY)  # type: ignore[operator]
    data = tmp_path / "train.jsonl"  # type: ignore[operator]
    training = simulate.FraudTraffic(seed=21).events(5000, start_s=T0 - 3600, span_s=600)
    data.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in training))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "agents",
            "reference",
            "build",
            "--model",
            "fraud-detector",
            "--version",
            "v1",
            "--data",
            str(data),
            "--broker",
            worker.settings.bootstrap,
            "--topic-prefix",
            worker.prefix,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    # A team publishes the profile before the version serves: wait until the
    # worker has consumed it (its committed offset moves past it).
    worker.wait_committed("references", 1, timeout_s=60)
    traffic = simulate.FraudTraffic(seed=22)
    messages = _window(traffic, 0, shifted=True)
    messages += list(simulate.batches(traffic.events(1, start_s=T0 + 61, span_s=1), 500))
    producer = simulate.make_producer(worker.settings.bootstrap)
    simulate.publish(producer, worker.topic("predictions"), "fraud-detector", messages)

    (report,) = tail.collect(
        worker.settings.bootstrap, worker.topic("drift"), lambda seen: len(seen) >= 1, timeout_s=90
    )
    assert report["reference"]["kind"] == "profile", worker.log()
    assert report["n"] == PER_WINDOW
    flagged = {n for n, f in report["features"].items() if f["status"] != "ok"}
    assert flagged == set(simulate.SHIFTED)
