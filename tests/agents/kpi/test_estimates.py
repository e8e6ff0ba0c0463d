"""The KPI handler's estimates before labels: calibrations from ``references``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.dev import simulate
from agents.inputs.codec import Origin
from agents.kpi.handler import KpiHandler
from agents.operator import reference_build
from schemas.policy import DriftPolicy, Policy, parse_policy
from schemas.reference import ReferenceProfile
from schemas.reports import KpiReport

T0 = 1_800_000_000 - 1_800_000_000 % 60
MODEL = "fraud-detector"
POLICY = """
kpi:
  window: 60s
  allowed_lateness: 0s
  label_ttl: 10m
  min_labeled: 200
  min_estimated: 1000
  estimated_targets: {roc_auc: {min: 0.99}}
"""


class Run:
    def __init__(self, policy: Policy) -> None:
        self.handler = KpiHandler(
            policy=policy,
            predictions_topic="predictions",
            labels_topic="labels",
            references_topic="references",
            max_message_bytes=1 << 26,
        )
        self.table: dict[bytes, bytes] = {}
        self.reports: list[KpiReport] = []
        self.dead: list[Any] = []
        self.offset = 0

    def send(self, topic: str, payload: bytes, key: bytes = MODEL.encode()) -> None:
        self.offset += 1
        out = self.handler.handle(payload, Origin(topic, 0, self.offset, key), self.table)
        self.reports += out.reports  # type: ignore[arg-type]
        self.dead += out.dead

    def events(self, topic: str, events: list[dict[str, Any]]) -> None:
        self.send(topic, orjson.dumps({"events": events}))


def labeled_records(n: int, seed: int) -> list[dict[str, Any]]:
    preds, labels = simulate.FraudTraffic(seed=seed).events_with_labels(
        n, start_s=T0 - 86_400, span_s=3600, concept=False, label_delay_s=20, label_share=1.0
    )
    by_id = {lab["request_id"]: lab["label"] for lab in labels}
    return [
        {**p["features"], "score": p["score"], "label": by_id[p["request_id"]]}
        for p in preds
        if p["request_id"] in by_id
    ]


@pytest.fixture(scope="module")
def profile(tmp_path_factory: pytest.TempPathFactory) -> ReferenceProfile:
    path: Path = tmp_path_factory.mktemp("ref") / "train.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in labeled_records(20_000, 5)))
    built = reference_build.build(path, model=MODEL, version="v1", policy=DriftPolicy())
    assert built.calibration is not None
    return built


def windows(run: Run, n_windows: int, *, labels: bool) -> list[dict[str, Any]]:
    preds, labs = [], []
    gen = simulate.FraudTraffic(seed=9)
    for w in range(n_windows):
        p, lab = gen.events_with_labels(
            3000, start_s=T0 + 60 * w, span_s=60, concept=False, label_delay_s=20, label_share=1.0
        )
        preds += p
        labs += lab
    run.events("predictions", preds)
    run.events("predictions", [{**preds[-1], "request_id": "tick", "ts": T0 + 60 * n_windows + 1}])
    if labels:
        run.events("labels", labs)
    return labs


def test_first_revision_carries_estimates_from_the_published_calibration(
    profile: ReferenceProfile,
) -> None:
    run = Run(parse_policy(POLICY))
    run.send("references", profile.model_dump_json().encode(), key=b"fraud-detector@v1")
    assert run.dead == []
    windows(run, 2, labels=False)
    firsts = [r for r in run.reports if r.revision == 0]
    assert len(firsts) == 2
    for r in firsts:
        assert r.n_labeled == 0 and "roc_auc" not in r.metrics
        est = r.estimated_metrics["roc_auc"]
        assert 0.5 < est.lower <= est.value <= est.upper < 1.0
        assert r.status == "breach" and r.estimated  # the estimated target of 0.99
        assert r.breaches[0].startswith("estimated roc_auc")


def test_estimates_sit_beside_realized_metrics_when_labels_come(
    profile: ReferenceProfile,
) -> None:
    """On the simulator's fraud traffic (no shift) the estimate is within 0.03 of the
    realized AUC on windows of 3,000; the labels then judge the target, not the estimate."""
    run = Run(parse_policy(POLICY))
    run.send("references", profile.model_dump_json().encode(), key=b"fraud-detector@v1")
    labs = windows(run, 2, labels=True)
    run.events("labels", [{**labs[-1], "request_id": "late", "ts": T0 + 60 * 20}])
    revised = [r for r in run.reports if r.n_labeled >= 200]
    assert revised
    for r in revised:
        est = r.estimated_metrics["roc_auc"]
        assert abs(est.value - r.metrics["roc_auc"]) < 0.03, (est, r.metrics["roc_auc"])
        assert not r.estimated and not any(b.startswith("estimated") for b in r.breaches)


def test_without_a_profile_the_report_says_there_is_no_calibration() -> None:
    run = Run(parse_policy(POLICY))
    windows(run, 1, labels=False)
    [first] = run.reports
    assert first.estimated_metrics == {} and first.status == "ok"
    assert any("no calibration for this model version" in n for n in first.notes)


def test_a_profile_without_calibration_removes_it_and_says_so(
    profile: ReferenceProfile,
) -> None:
    run = Run(parse_policy(POLICY))
    run.send("references", profile.model_dump_json().encode(), key=b"fraud-detector@v1")
    bare = profile.model_copy(update={"calibration": None})
    run.send("references", bare.model_dump_json().encode(), key=b"fraud-detector@v1")
    windows(run, 1, labels=False)
    [first] = run.reports
    assert first.estimated_metrics == {}
    assert any("the reference profile of v1 has no calibration" in n for n in first.notes)


def test_a_calibration_for_another_positive_label_is_not_used(
    profile: ReferenceProfile,
) -> None:
    policy = parse_policy(POLICY.replace("min_estimated", "positive_label: fraud\n  min_estimated"))
    run = Run(policy)
    run.send("references", profile.model_dump_json().encode(), key=b"fraud-detector@v1")
    windows(run, 1, labels=False)
    [first] = run.reports
    assert first.estimated_metrics == {}
    assert any("counts 1.0 as positive, the policy 'fraud'" in n for n in first.notes)


def test_a_bad_profile_is_dead_lettered_and_changes_nothing() -> None:
    run = Run(parse_policy(POLICY))
    run.send("references", b'{"model": "fraud-detector"}', key=b"fraud-detector@v1")
    [dead] = run.dead
    assert "not a valid ReferenceProfile" in dead.error
    assert not any(k.startswith(b"r|") for k in run.table)


class _Message:
    """What replay reads of a confluent-kafka message."""

    def __init__(self, topic: str, offset: int, key: bytes, value: bytes) -> None:
        self._t, self._o, self._k, self._v = topic, offset, key, value

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes:
        return self._k

    def value(self) -> bytes:
        return self._v


def test_a_replay_reads_the_calibration_and_gives_the_same_estimates(
    profile: ReferenceProfile,
) -> None:
    from agents.config import Settings
    from agents.operator import replay

    live = Run(parse_policy(POLICY))
    live.send("references", profile.model_dump_json().encode(), key=b"fraud-detector@v1")
    windows(live, 1, labels=False)
    settings = Settings()
    messages = [
        _Message(settings.topic(t), i, k, v)
        for i, (t, k, v) in enumerate(
            [("references", b"fraud-detector@v1", profile.model_dump_json().encode())]
            + [
                ("predictions", MODEL.encode(), batch)
                for batch in simulate.batches(_one_window(), 1000)
            ]
        )
    ]
    result = replay.recompute(messages, parse_policy(POLICY), settings)
    [first] = [r for r in result.kpi if r["revision"] == 0]
    [mine] = [r for r in live.reports if r.revision == 0]
    assert first["estimated_metrics"] == orjson.loads(mine.model_dump_json())["estimated_metrics"]
    assert first["estimated"] is True


def _one_window() -> list[dict[str, Any]]:
    preds, _ = simulate.FraudTraffic(seed=9).events_with_labels(
        3000, start_s=T0, span_s=60, concept=False, label_delay_s=20, label_share=1.0
    )
    return [*preds, {**preds[-1], "request_id": "tick", "ts": T0 + 61}]
