"""What a reviewer signs: the audit report's gathered data and its HTML, parsed.

One realistic record set (drift with flagged features and the multivariate
signal, KPIs against targets, a command whose evidence names windows in epoch
ms as the policy agent writes them, a hash-chained trail, poisoning reports with
records held for lack of a trusted set), a policy file and a file registry.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.config import Settings
from agents.controller.registry import FileRegistry, RegistryError
from agents.operator import audit_report
from agents.operator.audit_render import page
from agents.operator.audit_report import (
    CSP,
    Generator,
    PolicyInForce,
    gather,
    render,
    who_generated,
)
from agents.operator.inventory import describe_model, policy_in_force
from schemas.events import TrainingRecord
from schemas.poisoning import PoisoningPolicy
from schemas.reports import FeatureDrift, MultivariateDrift
from streams.poisoning.report import unscreened_report
from streams.policy.chain import GENESIS, event_hash, verify_chain
from tests.agents.operator.audit_page import parse
from tests.streams.policy.cases import T0, drift, kpi, poisoning

POLICY = """
drift:
  window: 5m
  psi_warn: 0.05
  psi_drift: 0.2
kpi:
  window: 5m
  targets:
    accuracy: {min: 0.85}
decisions:
  retrain: {drift_windows: 3}
"""
CARD = {
    "owner": "risk-ml",
    "risk_tier": "high",
    "purpose": "score card payments",
    "training_data": {"description": "payments 2026-10", "sha256": "ab" * 32},
    "evaluation": {"roc_auc": 0.91, "accuracy": 0.88, "dataset": "holdout"},
}
#: The issue's example: a window start in epoch ms, as the policy agent's evidence has it.
EVIDENCE_MS = 1_796_282_700_000
WHO = Generator("alice", "review-host", "0.1.0", datetime(2026, 12, 3, 22, 0, tzinfo=UTC))


def _feature(psi: float, status: str) -> FeatureDrift:
    return FeatureDrift(
        kind="numeric",
        n=5000,
        missing=0,
        metrics={"psi": psi},
        threshold=0.03,
        status=status,
        drifted=status == "drift",  # type: ignore[arg-type]
        thresholds={"psi_warn": 0.05, "psi_drift": 0.2, "consecutive": 2},
        reason="" if status == "ok" else f"PSI {psi} over the floor",
    )


def _drift() -> list[dict[str, Any]]:
    out = []
    for i, (psi, status) in enumerate(
        [(0.01, "ok"), (0.08, "warn"), (0.12, "drift"), (0.31, "drift")]
    ):
        r = drift(i, "ok" if status == "ok" else status)
        r.features["amount"] = _feature(psi, status)
        r.thresholds = {"multivariate_warn": 0.1, "multivariate_drift": 0.5}
        r.multivariate = MultivariateDrift(
            n=5000,
            reconstruction_error=2.0,
            baseline=2.0,
            relative_change=0.05 * i,
            z=0.0,
            components=2,
            features_used=["a", "b"],
            status="warn" if i == 3 else "ok",
            drifted=False,
            reason="above its baseline" if i == 3 else "",
        )
        out.append(r.model_dump(mode="json"))
    return out


def _chain() -> list[dict[str, Any]]:
    events, prev = [], GENESIS
    for i, action in enumerate(["promote", "canary", "rollback"]):
        event = {
            "model": "fraud",
            "command_id": f"c{i}",
            "action": action,
            "status": "applied",
            "reason": "ok",
            "at": f"2026-11-01T00:1{i}:00Z",
            "state": {
                "champion": "v1",
                "canary": "v2" if i == 1 else None,
                "canary_weight": 0.1 if i == 1 else 0.0,
                "last_known_good": None,
            },
            "prev_hash": prev,
        }
        event["hash"] = prev = event_hash(event)
        events.append(event)
    return events


def _poisoning() -> list[dict[str, Any]]:
    records = [
        TrainingRecord(
            record_id=str(i),
            model="fraud",
            ts=T0.timestamp() + i,
            source="crm",
            features={"x": 1.0},
            label=True,
        )
        for i in range(7)
    ]
    held = unscreened_report(PoisoningPolicy(window="5m"), "fraud", records, "no trusted set")
    campaign = poisoning(1, "campaign")
    campaign.sources["crm"].quarantined["duplicate_flood"] = 12
    return [
        poisoning(0).model_dump(mode="json"),
        held.model_dump(mode="json"),
        campaign.model_dump(mode="json"),
    ]


COMMAND = {
    "command_id": "c2",
    "type": "retrain",
    "from_version": "v1",
    "issued_by": "policy",
    "issued_at": "2026-11-01T00:20:00Z",
    "approval_required": False,
    "reason": "sustained drift of v1: 3 drift windows in a row (policy: 3); drifting: amount",
    "evidence": [
        {
            "kind": "drift",
            "model_version": "v1",
            "variant": "champion",
            "window_start": EVIDENCE_MS,
            "window_end": EVIDENCE_MS + 300_000,
            "status": "drift",
            "n": 5000,
            "why": ["amount"],
        }
    ],
}


@pytest.fixture
def records(tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    policy, digest = policy_in_force(str(path))
    registry = FileRegistry(tmp_path / "registry")
    artifact = tmp_path / "v1.bin"
    artifact.write_bytes(b"weights of v1")
    registry.register("fraud", "v1", artifact, model_card=CARD)
    chain = _chain()
    return {
        "drift": _drift(),
        "kpi": [
            kpi(i, accuracy=a, status="breach" if a < 0.85 else "ok").model_dump(mode="json")
            for i, a in enumerate([0.9, 0.88, 0.8, 0.7])
        ],
        "commands": [COMMAND],
        "deployments": chain,
        "poisoning": _poisoning(),
        "check": verify_chain(chain),
        "policy": PolicyInForce(policy, str(path), digest),
        "entry": describe_model("fraud", registry, policy),
        "generator": WHO,
        "path": path,
        "registry": registry,
    }


def _render(records: dict[str, Any], **over: Any) -> str:
    args = {k: v for k, v in records.items() if k not in ("path", "registry")}
    return render("fraud", **{"start_ms": 0, "end_ms": 2**62, **args, **over})


def test_no_epoch_milliseconds_anywhere_in_the_page(records: dict[str, Any]) -> None:
    html = _render(records)
    assert re.findall(r"\b\d{13}\b", html) == []
    when = datetime.fromtimestamp(EVIDENCE_MS / 1000, tz=UTC)
    evidence = parse(html).table("commands").as_dict()["evidence"]
    assert (
        f"window {when:%Y-%m-%d %H:%M}-{when.replace(minute=when.minute + 5):%H:%M} UTC" in evidence
    ), evidence


def test_the_time_range_in_words_and_utc(records: dict[str, Any]) -> None:
    start = int(T0.timestamp() * 1000)
    closed = parse(_render(records, start_ms=start, end_ms=start + 2 * 3_600_000))
    said = closed.table("summary").as_dict()["time range"]
    assert said.startswith(
        "From Sunday 1 November 2026, 00:00 UTC to Sunday 1 November 2026, "
        "02:00 UTC (2 hours; the end excluded)."
    )
    opened = parse(_render(records)).table("summary").as_dict()["time range"]
    assert "no --from and no --to given" in opened
    # the records cover the first window's start to the last poisoning window's end
    assert (
        "The records shown cover Sunday 1 November 2026, 00:00 UTC to Sunday 1 November "
        "2026, 00:20 UTC (20 minutes)." in opened
    ), opened


def test_the_charts_carry_levels_targets_and_flags(records: dict[str, Any]) -> None:
    data = gather(
        "fraud",
        start_ms=0,
        end_ms=2**62,
        **{k: v for k, v in records.items() if k not in ("path", "registry")},
    )
    assert [(line.value, line.kind) for line in data.psi.lines] == [(0.05, "warn"), (0.2, "limit")]
    assert data.psi.flagged == {"warn": 1, "breach": 2}
    assert data.multivariate is not None and data.multivariate.flagged == {"warn": 1}
    assert sorted(line.value for line in data.multivariate.lines) == [-50, -10, 10, 50]
    by_title = {c.title: c for c in data.kpis}
    accuracy = by_title["accuracy per version/variant"]
    assert [(line.value, line.label) for line in accuracy.lines] == [(0.85, "target min 0.85")]
    assert [p.flag for p in accuracy.series["v1/champion"]] == ["", "", "breach", "breach"]
    errors = by_title["error_rate per version/variant"]
    assert [line.label for line in errors.lines] == ["rollback limit 0.05"]
    assert by_title["latency_p99_ms per version/variant"].y_label == "p99 latency (ms)"
    drawn = parse(page(data))
    assert {
        "window start (UTC)",
        "PSI (population stability index, unitless)",
        "accuracy (share correct, 0 to 1)",
        "target min 0.85",
        "drift level 0.2",
    } <= set(drawn.svg_text)
    assert drawn.classes["flag-breach"] == 4 and drawn.classes["flag-warn"] == 2


def test_the_policy_hash_and_the_rule_each_decision_applied(records: dict[str, Any]) -> None:
    parsed = parse(_render(records))
    digest = hashlib.sha256(records["path"].read_bytes()).hexdigest()
    assert (
        parsed.table("summary").as_dict()["policy given"] == f"{records['path']}, SHA-256 {digest}"
    )
    settings = parsed.table("policy", "setting").as_dict()
    assert settings["kpi.targets.accuracy.min"] == "0.85"
    assert settings["decisions.retrain.drift_windows"] == "3" and settings["drift.window"] == "5m"
    decision = parsed.table("commands").as_dict()
    assert decision["rule applied"] == (
        "retrain on sustained drift: decisions.retrain.drift_windows = 3 in the policy given."
    )
    defaults = parse(_render(records, policy=None)).table("summary").as_dict()
    assert defaults["policy given"] == "the built-in defaults (no policy file given)"


def test_each_decision_names_the_policy_it_was_decided_under(records: dict[str, Any]) -> None:
    """Flagged where that is not the policy given to the report."""
    digest = hashlib.sha256(records["path"].read_bytes()).hexdigest()
    commands = [
        {**COMMAND, "command_id": "same", "policy_sha256": digest},
        {**COMMAND, "command_id": "other", "policy_sha256": "cd" * 32},
        {**COMMAND, "command_id": "unrecorded"},
        {**COMMAND, "command_id": "manual", "type": "rollback", "issued_by": "operator:ana"},
    ]
    html = _render(records, commands=commands)
    parsed = parse(html)
    said = [t.as_dict()["policy SHA-256"] for t in parsed.tables if t.section == "commands"]
    assert said == [
        f"{digest}, the policy given",
        f"{'cd' * 32}: differs from the policy given ({digest}); decided under another policy",
        "not recorded (the built-in defaults, or a driftline before commands recorded it): "
        "not compared",
        "none: an operator's command is decided by a person, not a policy",
    ]
    assert html.count("<span class=bad>" + "cd" * 32) == 1  # only the differing one flagged
    # under the built-in defaults, any recorded file differs
    defaults = parse(_render(records, commands=commands[:1], policy=None))
    assert defaults.table("commands").as_dict()["policy SHA-256"] == (
        f"{digest}: differs from the built-in defaults given; decided under another policy"
    )


def test_each_version_with_its_checksum_card_and_evaluation(records: dict[str, Any]) -> None:
    versions = parse(_render(records)).table("versions", "version")
    row = dict(zip(versions.headers, versions.rows[0], strict=True))
    registered = records["registry"].get("fraud", "v1")
    assert row["artifact SHA-256"] == registered.sha256
    assert (row["owner"], row["risk tier"], row["purpose"]) == (
        "risk-ml",
        "high",
        "score card payments",
    )
    assert row["evaluation"] == "accuracy 0.88; roc_auc 0.91"
    assert row["training data"] == f"payments 2026-10 (SHA-256 {'ab' * 32})"
    assert row["model card"] == "complete"
    missing = parse(_render(records, entry=None)).text
    assert "fraud is not in the registry the report was given" in missing


def test_each_version_with_its_held_out_set_and_per_segment_metrics(
    records: dict[str, Any], tmp_path: Path
) -> None:
    """Two versions judged on the same data have the same digest and size on the page."""
    registry, policy = records["registry"], records["policy"].policy
    evaluation = {
        "metrics": {"roc_auc": 0.93},
        "held_out": {"sha256": "3f" * 32, "size": 12000, "description": "2026-10 <stratified>"},
        "segments": {"country=FR": {"roc_auc": 0.89}, "country=DE": {"roc_auc": 0.92, "f1": 0.8}},
    }
    artifact = tmp_path / "v2.bin"
    artifact.write_bytes(b"weights of v2")
    registry.register("fraud", "v2", artifact, model_card={**CARD, "evaluation": evaluation})
    html = _render(records, entry=describe_model("fraud", registry, policy))
    versions = parse(html).table("versions", "version")
    rows = {row[0]: dict(zip(versions.headers, row, strict=True)) for row in versions.rows}
    assert rows["v2"]["evaluation"] == "roc_auc 0.93"
    assert rows["v2"]["held-out set"] == (
        f"SHA-256 {'3f' * 32}, 12000 examples (2026-10 <stratified>)"
    )
    assert rows["v2"]["per segment"] == "country=DE: f1 0.8, roc_auc 0.92; country=FR: roc_auc 0.89"
    assert "&lt;stratified&gt;" in html  # escaped: a card's text is never markup
    # v1's evaluation is of the earlier flat form: metrics without a held-out set
    assert (rows["v1"]["held-out set"], rows["v1"]["per segment"]) == ("not recorded", "-")


def test_each_deployment_event_with_its_hash_and_previous_hash(records: dict[str, Any]) -> None:
    chain = records["deployments"]
    table = parse(_render(records)).table("chain", "at")
    assert table.column("previous hash") == [GENESIS, chain[0]["hash"], chain[1]["hash"]]
    assert table.column("hash") == [e["hash"] for e in chain]
    assert table.column("link") == ["links"] * 3
    assert table.column("at")[0] == "2026-11-01 00:10:00 UTC"
    altered = [chain[0], {**chain[1], "reason": "edited"}, chain[2]]
    parsed = parse(_render(records, deployments=altered, check=verify_chain(altered)))
    assert parsed.table("chain", "at").column("link")[1] == "its hash does not match its content"
    assert parsed.table("summary").as_dict()["audit chain"].startswith("Audit chain BROKEN")


def test_quarantine_counts_with_records_held_for_lack_of_a_trusted_set(
    records: dict[str, Any],
) -> None:
    parsed = parse(_render(records))
    statuses = parsed.table("quarantine", "status")
    assert statuses.rows == [["campaign", "1"], ["ok", "1"], ["suspect", "1"]]
    sources = parsed.table("quarantine", "source")
    assert sources.headers == [
        "source",
        "seen",
        "passed",
        "duplicate_flood",
        "no_trusted_set (held, no trusted set in time)",
    ]
    assert sources.rows[0] == ["crm", "2007", "2000", "12", "7"]
    held = parsed.table("quarantine", "records held for lack of a trusted set").as_dict()
    assert held["quarantined unscreened (no_trusted_set)"] == "7"
    assert "{'" not in parsed.text  # no Python dict shown


def test_who_generated_it_with_which_version_and_when(records: dict[str, Any]) -> None:
    said = parse(_render(records)).table("summary").as_dict()["generated"]
    assert said == "2026-12-03 22:00:00 UTC by alice on review-host, driftline 0.1.0"
    me = who_generated()
    assert me.version == version("driftline") and me.host and me.user
    assert me.at.tzinfo is UTC


def test_it_prints_on_a4_and_still_fetches_nothing(records: dict[str, Any]) -> None:
    parsed = parse(_render(records))
    style = parsed.style
    assert "@page{size:A4;margin:" in style and "@media print{" in style
    printing = style[style.index("@media print{") :]
    assert "section{break-before:page}" in printing
    assert "figure,.decision,tr{break-inside:avoid}" in printing
    assert "svg{max-width:100%;height:auto" in style  # charts scale to the page, never clip
    assert parsed.csp == CSP
    assert not {"src", "href", "srcset", "action"} & parsed.attributes
    assert not {"script", "img", "link", "iframe", "object"} & set(parsed.tags)
    assert list(parsed.sections) == [
        "summary",
        "policy",
        "versions",
        "drift",
        "kpi",
        "commands",
        "chain",
        "quarantine",
        "signoff",
        "policy-settings",
    ]


def test_a_half_open_range_says_which_end_is_open(records: dict[str, Any]) -> None:
    start = int(T0.timestamp() * 1000) + 5 * 60_000
    said = parse(_render(records, start_ms=start)).table("summary").as_dict()["time range"]
    assert said.startswith(
        "All records from Sunday 1 November 2026, 00:05 UTC to the last on the topics "
        "(no --to given)."
    ), said


class _Unreadable(FileRegistry):
    def models(self) -> list[str]:
        raise RegistryError("the registry's disk is gone")


def test_build_reads_the_topics_the_registry_and_the_policy_file(
    records: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``build`` with the topics stood in for (the real reader runs in the end-to-end
    tests): records of other models and outside the range are left out, the policy file is
    hashed, the registry's versions shown, and a registry that cannot be read is said."""
    other = {**records["commands"][0], "model": "churn", "command_id": "not-this-model"}
    late = {
        **records["commands"][0],
        "command_id": "after-the-range",
        "issued_at": "2026-11-02T00:00:00Z",
    }
    topics = {
        "drift": records["drift"],
        "kpi": records["kpi"],
        "poisoning": records["poisoning"],
        "deployments": records["deployments"],
        "commands": [
            {**records["commands"][0], "model": "fraud"},
            other,
            {**late, "model": "fraud"},
        ],
    }

    def fake_read_to_end(bootstrap: str, topic: str) -> list[bytes]:
        return [orjson.dumps(doc) for doc in topics[topic.removeprefix("p.")]]

    monkeypatch.setattr(audit_report, "read_to_end", fake_read_to_end)
    settings = Settings(
        topic_prefix="p.", policy=str(records["path"]), registry=str(tmp_path / "registry")
    )
    start = int(T0.timestamp() * 1000)
    html = audit_report.build(
        settings, "fraud", start_ms=start, end_ms=start + 3_600_000, registry=records["registry"]
    )
    parsed = parse(html)
    digest = hashlib.sha256(records["path"].read_bytes()).hexdigest()
    assert parsed.table("summary").as_dict()["policy given"].endswith(digest)
    assert parsed.table("commands").as_dict()["command id"] == "c2"  # the one command kept
    assert "not-this-model" not in html and "after-the-range" not in html
    versions = parsed.table("versions", "version")
    assert versions.column("artifact SHA-256") == [records["registry"].get("fraud", "v1").sha256]
    broken = parse(
        audit_report.build(
            settings,
            "fraud",
            start_ms=start,
            end_ms=start + 3_600_000,
            registry=_Unreadable(tmp_path / "registry"),
        )
    )
    assert (
        f"the registry {tmp_path / 'registry'} could not be read: the registry's disk is "
        "gone" in broken.text
    )
    assert broken.table("chain", "at").rows, "the rest of the trail is still shown"


def test_the_concept_detector_of_each_version_calibrated_or_why_not(
    records: dict[str, Any],
) -> None:
    kpis = [dict(r) for r in records["kpi"]]
    calibrated = {
        "detector": "adwin",
        "calibrated": True,
        "params": {"delta": 0.0004},
        "scale": 3.2,
        "false_alarm_rate": 0.045,
        "target_false_alarm_rate": 0.05,
        "window_events": 5000,
    }
    for r in kpis[:-1]:
        r["concept"] = {"detector": "adwin", "calibrated": False, "reason": "older"}
    kpis[-1]["concept"] = calibrated  # the newest report of the series is the one shown
    table = parse(_render({**records, "kpi": kpis})).table("kpi", "version/variant")
    assert table.headers == ["version/variant", "detector", "parameters", "false alarms"]
    (row,) = table.rows
    assert row[1:] == [
        "adwin",
        "delta=0.0004",
        "calibrated on the reference: alarms in 4.5% of windows of 5000 errors "
        "(at most 5.0% stated)",
    ]
    kpis[-1]["concept"] = {
        "detector": "adwin",
        "calibrated": False,
        "reason": "the reference has no labels",
    }
    (row,) = parse(_render({**records, "kpi": kpis})).table("kpi", "version/variant").rows
    assert row[3] == "not calibrated: the reference has no labels"
    text = parse(_render(records)).text
    assert "no KPI report names its concept-drift detector" in text


def test_a_table_per_shadow_against_the_served_version(records: dict[str, Any]) -> None:
    from schemas.reports import ShadowComparison

    compared = ShadowComparison(
        versus="v1", pairs=950, agreement=0.931, scored_pairs=950, score_mean_abs_diff=0.042,
        score_max_abs_diff=0.38, score_mean_diff=0.011, labeled_pairs=800,
        served_metrics={"accuracy": 0.91, "errors": 72.0},
        shadow_metrics={"accuracy": 0.89, "errors": 88.0},
    )
    shadow = kpi(0, variant="shadow", version="v2").model_copy(update={"shadow": [compared]})
    page_ = parse(_render({**records, "kpi": [*records["kpi"], shadow.model_dump(mode="json")]}))
    table = page_.table("kpi", "shadow window")
    (row,) = table.rows
    assert row[1:] == ["v1", "950", "0.931", "0.042 (0.380)", "+0.011", "800",
                       "accuracy 0.910", "accuracy 0.890", "ok"]
    assert "shadow v2" in page_.text
    assert "Shadows beside the served version" not in parse(_render(records)).text
