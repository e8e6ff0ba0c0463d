"""The evaluation gate (streams.policy.gates): every kind of check, with the numbers it names."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.gates import GatePolicy
from streams.policy.gates import GateVerdict, judge_gate

DIGEST = "3f" * 32


def card(tier: str = "high", evaluation: Any = "default", **metrics: float) -> dict[str, Any]:
    """A card of ``tier`` whose structured evaluation has ``metrics`` (or ``evaluation``)."""
    if evaluation == "default":
        evaluation = {
            "metrics": metrics or {"roc_auc": 0.9},
            "held_out": {"sha256": DIGEST, "size": 5000},
        }
    return {"owner": "risk-ml", "risk_tier": tier, "evaluation": evaluation}


def judge(
    gate: dict[str, Any],
    c: dict[str, Any] | None,
    *,
    champion: str | None = None,
    champion_card: dict[str, Any] | None = None,
) -> GateVerdict:
    verdict = judge_gate(
        GatePolicy(high=gate), version="v2", card=c, champion=champion, champion_card=champion_card
    )
    assert verdict is not None
    return verdict


def test_no_gate_configured_judges_nothing() -> None:
    assert judge_gate(GatePolicy(), version="v2", card=card(evaluation=None)) is None


def test_a_tier_without_a_gate_is_not_gated_but_a_card_without_a_tier_is_refused() -> None:
    gates = GatePolicy(high={"min_metrics": {"roc_auc": 0.85}})
    assert judge_gate(gates, version="v2", card=card("minimal", evaluation=None)) is None
    verdict = judge_gate(gates, version="v2", card={"owner": "x", "evaluation": None})
    assert verdict is not None and not verdict.passed
    assert verdict.reason.startswith("gates: v2's model card names no risk tier")


@pytest.mark.parametrize("evaluation", [None, {"dataset": "holdout"}])
def test_a_version_without_a_readable_evaluation_is_refused(evaluation: Any) -> None:
    verdict = judge({"min_metrics": {"roc_auc": 0.85}}, card(evaluation=evaluation))
    assert not verdict.passed and verdict.gate == "high"
    assert verdict.reason.startswith("gate high: v2 has ")
    assert "register a version with --evaluation" in verdict.reason


def test_min_metrics() -> None:
    gate = {"min_metrics": {"roc_auc": 0.85}}
    failed = judge(gate, card(roc_auc=0.81))
    assert (failed.passed, failed.reason) == (False, "gate high.min_metrics roc_auc 0.81 < 0.85")
    assert judge(gate, card(roc_auc=0.85)).passed  # the bound itself passes
    ok = judge(gate, card(roc_auc=0.9))
    assert (ok.passed, ok.reason) == (True, "gate high passed: min_metrics roc_auc 0.9 >= 0.85")
    missing = judge(gate, card(f1=0.9))
    assert missing.reason == "gate high.min_metrics roc_auc: the evaluation has no roc_auc"


def test_max_metrics() -> None:
    gate = {"max_metrics": {"log_loss": 0.4}}
    assert judge(gate, card(log_loss=0.45)).reason == "gate high.max_metrics log_loss 0.45 > 0.4"
    assert judge(gate, card(log_loss=0.4)).passed


def test_min_held_out_size_and_a_flat_evaluation() -> None:
    gate = {"min_held_out_size": 10_000}
    assert judge(gate, card(roc_auc=0.9)).reason == (
        "gate high.min_held_out_size held-out size 5000 < 10000"
    )
    flat = judge(gate, card(evaluation={"roc_auc": 0.95}))
    assert not flat.passed and "names no held-out set" in flat.reason
    assert judge({"min_held_out_size": 5000}, card(roc_auc=0.9)).passed
    # a flat file still passes a gate that checks only metrics
    assert judge({"min_metrics": {"roc_auc": 0.9}}, card(evaluation={"roc_auc": 0.95})).passed


def test_max_loss_against_the_champion_either_way_round() -> None:
    gate = {"max_loss": {"roc_auc": 0.02, "log_loss": 0.01}}
    champ = card(roc_auc=0.90, log_loss=0.30)
    worse = judge(gate, card(roc_auc=0.85, log_loss=0.35), champion="v1", champion_card=champ)
    assert not worse.passed
    assert worse.reason == (
        "gate high.max_loss roc_auc 0.85 is 0.05 below the champion v1's 0.9 (> 0.02 allowed); "
        "gate high.max_loss log_loss 0.35 is 0.05 above the champion v1's 0.3 (> 0.01 allowed)"
    )
    # within the allowance (0.90 - 0.88 is 0.020000000000000018 in floating point)
    ok = judge(gate, card(roc_auc=0.88, log_loss=0.29), champion="v1", champion_card=champ)
    assert ok.passed, ok.reason
    assert (
        "max_loss roc_auc 0.88 is 0.02 below the champion v1's 0.9 (<= 0.02 allowed)" in ok.reason
        and "log_loss 0.29 vs the champion v1's 0.3: no loss" in ok.reason
    )


def test_max_loss_without_a_champion_passes_and_a_champion_without_the_metric_fails() -> None:
    gate = {"max_loss": {"roc_auc": 0.02}}
    first = judge(gate, card(roc_auc=0.7))
    assert first.passed and "no champion to compare against" in first.reason
    for champ in (card(f1=0.9), card(evaluation=None), None):
        verdict = judge(gate, card(roc_auc=0.9), champion="v1", champion_card=champ)
        assert verdict.reason == (
            "gate high.max_loss roc_auc: the champion v1's evaluation "
            "has no roc_auc to compare against"
        )


def test_max_disparity_between_segments() -> None:
    gate = {"max_disparity": {"roc_auc": 0.05}}
    ev = {
        "metrics": {"roc_auc": 0.9},
        "held_out": {"sha256": DIGEST, "size": 5000},
        "segments": {
            "DE": {"roc_auc": 0.93},
            "FR": {"roc_auc": 0.85},
            "IT": {"roc_auc": 0.9},
            "ES": {"f1": 0.1},
        },
    }
    wide = judge(gate, card(evaluation=ev))
    assert wide.reason == (
        "gate high.max_disparity roc_auc gap 0.08 > 0.05 between segments DE 0.93 and FR 0.85"
    )
    ev["segments"]["FR"] = {"roc_auc": 0.89}
    assert judge(gate, card(evaluation=ev)).passed
    one = {**ev, "segments": {"DE": {"roc_auc": 0.93}, "ES": {"f1": 0.1}}}
    assert (
        "gives roc_auc for 1 segment(s); at least 2 are needed"
        in judge(gate, card(evaluation=one)).reason
    )
    assert not judge(gate, card(roc_auc=0.9)).passed  # no segments at all


def test_every_failure_is_named_not_only_the_first() -> None:
    gate = {"min_metrics": {"roc_auc": 0.85, "f1": 0.5}, "min_held_out_size": 10_000}
    verdict = judge(gate, card(roc_auc=0.8, f1=0.4))
    assert verdict.reason.count("gate high.") == 3
