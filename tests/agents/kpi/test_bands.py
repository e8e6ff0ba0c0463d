"""Reference build draws KPI bands; the KPI handler judges windows against them (issue 22)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.dev import simulate
from agents.operator import reference_build
from schemas.policy import DriftPolicy, parse_policy
from schemas.reference import ReferenceProfile
from schemas.reports import KpiReport
from tests.agents.kpi.test_estimates import MODEL, T0, Run

POLICY = parse_policy("""
kpi:
  window: 60s
  allowed_lateness: 0s
  label_ttl: 10m
  min_labeled: 200
  targets: {roc_auc: {min: 0.6}}
  reference_bands: {metrics: [roc_auc, accuracy, brier], window_events: 3000}
""")
PER_WINDOW = 3_000


def records(n: int, seed: int) -> list[dict[str, Any]]:
    preds, labels = simulate.FraudTraffic(seed=seed).events_with_labels(
        n, start_s=T0 - 86_400, span_s=3600, concept=False, label_delay_s=0, label_share=1.0
    )
    by_id = {lab["request_id"]: lab["label"] for lab in labels}
    return [
        {**p["features"], "score": p["score"], "prediction": p["prediction"],
         "label": by_id[p["request_id"]]}
        for p in preds
    ]


@pytest.fixture(scope="module")
def profile(tmp_path_factory: pytest.TempPathFactory) -> ReferenceProfile:
    path: Path = tmp_path_factory.mktemp("ref") / "train.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records(30_000, 5)))
    built = reference_build.profile_file(
        path, model=MODEL, version="v1", policy=DriftPolicy(),
        roles=reference_build.ColumnRoles(), kpi=POLICY.kpi,
    )
    assert built.profile.bands is not None, built.bands_reason
    return built.profile


def run_windows(run: Run, n_windows: int, *, concept: bool) -> list[KpiReport]:
    gen = simulate.FraudTraffic(seed=11)
    preds, labs = [], []
    for w in range(n_windows):
        p, lab = gen.events_with_labels(PER_WINDOW, start_s=T0 + 60 * w, span_s=60,
                                        concept=concept, label_delay_s=1, label_share=1.0)
        preds += p
        labs += lab
    run.events("predictions", preds)
    run.events("labels", labs)
    tick = {**preds[-1], "request_id": "tick", "ts": T0 + 60 * (n_windows + 20)}
    run.events("predictions", [tick])
    run.events("labels", [{**labs[-1], "request_id": "tick", "ts": T0 + 60 * (n_windows + 20)}])
    last: dict[Any, KpiReport] = {}
    for r in run.reports:
        if r.window_start.timestamp() < T0 + 60 * n_windows:
            last[r.window_start] = r
    return [last[k] for k in sorted(last)]


def test_the_profile_carries_bands_of_the_policy_s_window_size(profile: ReferenceProfile) -> None:
    bands = profile.bands
    assert bands is not None and bands.window_events == PER_WINDOW and bands.windows == 10
    assert {"roc_auc", "accuracy", "brier"} <= set(bands.metrics)
    assert 0.7 < bands.metrics["roc_auc"].mean < 0.9 and bands.metrics["roc_auc"].std > 0


def test_windows_are_held_to_the_band_beside_the_target_and_say_so(
    profile: ReferenceProfile,
) -> None:
    run = Run(POLICY)
    run.send("references", profile.model_dump_json().encode(), key=b"fraud-detector@v1")
    assert run.dead == []
    stable = run_windows(run, 3, concept=False)
    assert len(stable) == 3
    for r in stable:
        assert r.bands is not None and r.bands.applied and r.bands.window_events == PER_WINDOW
        sources = [t.source for t in r.thresholds["roc_auc"]]
        assert sources == ["target", "reference"]
        band = r.thresholds["roc_auc"][1]
        assert band.judged and band.lower is not None and band.upper is None
        assert r.status == "ok", r.breaches
    run = Run(POLICY)
    run.send("references", profile.model_dump_json().encode(), key=b"fraud-detector@v1")
    drifted = run_windows(run, 2, concept=True)
    for r in drifted:
        assert r.status == "breach"
        assert any(b.startswith("roc_auc") and "reference band" in b for b in r.breaches)
        assert r.thresholds["roc_auc"][1].breached


def test_without_a_profile_bands_do_not_apply_and_the_report_says_why() -> None:
    run = Run(POLICY)
    [r, *_] = run_windows(run, 1, concept=False)
    assert r.bands is not None and not r.bands.applied
    assert "no reference profile of v1" in r.bands.reason
    assert [t.source for t in r.thresholds["roc_auc"]] == ["target"]
    assert any(n.startswith("reference bands not applied") for n in r.notes)


def test_reference_build_prints_the_bands_or_why_there_are_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agents import cli

    policy = tmp_path / "policy.yaml"
    policy.write_text("kpi:\n  reference_bands: {metrics: [roc_auc], window_events: 1000}\n")
    data = tmp_path / "train.jsonl"
    data.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records(6_000, 2)))
    args = ["reference", "build", "--model", MODEL, "--version", "v1", "--data", str(data),
            "--policy", str(policy), "--no-publish", "--out", str(tmp_path / "p.json")]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "KPI bands from 6 reference windows of 1000 labels: " in out and "roc_auc 0." in out
    stored = ReferenceProfile.model_validate_json((tmp_path / "p.json").read_text())
    assert stored.bands is not None and stored.bands.windows == 6
    data.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records(3_000, 2)))
    assert cli.main(args) == 0
    assert (
        "no KPI bands (kpi.reference_bands): 3000 rows with a usable label and prediction "
        "make 3 windows of 1000; a band needs at least 5 of at least 50"
    ) in capsys.readouterr().out
