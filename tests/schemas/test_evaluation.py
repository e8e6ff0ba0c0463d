"""The evaluation file (schemas.evaluation): its shape, the flat form, and what a refusal says."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.evaluation import evaluation_problem, higher_is_better, parse_evaluation
from schemas.model_card import card_problem
from schemas.policy import PolicyError, parse_policy

DIGEST = "3f" * 32
GOOD: dict[str, Any] = {
    "metrics": {"roc_auc": 0.91, "log_loss": 0.31},
    "held_out": {"sha256": DIGEST, "size": 12_000, "description": "2026-10, 20 %"},
    "segments": {"country=DE": {"roc_auc": 0.92}, "country=FR": {"roc_auc": 0.89}},
    "evaluated_at": "2026-11-30",
}


def test_a_structured_evaluation_is_read_with_its_held_out_set_and_segments() -> None:
    ev = parse_evaluation(GOOD)
    assert ev.metrics == {"roc_auc": 0.91, "log_loss": 0.31}
    assert ev.held_out is not None and (ev.held_out.sha256, ev.held_out.size) == (DIGEST, 12_000)
    assert ev.segments["country=FR"] == {"roc_auc": 0.89}
    assert ev.model_extra == {"evaluated_at": "2026-11-30"}  # other members are kept


def test_a_flat_file_of_the_earlier_form_stays_readable_without_a_held_out_set() -> None:
    ev = parse_evaluation({"roc_auc": 0.93, "dataset": "holdout 2026-02", "n": 5000})
    assert ev.metrics == {"roc_auc": 0.93, "n": 5000.0}
    assert ev.held_out is None and ev.segments == {}
    assert ev.model_extra == {"dataset": "holdout 2026-02"}


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ({**GOOD, "metrics": {}}, "metrics: Dictionary should have at least 1 item"),
        ({**GOOD, "metrics": {"roc_auc": "0.9"}}, "metrics.roc_auc: Input should be a valid"),
        ({**GOOD, "metrics": {"roc_auc": True}}, "metrics.roc_auc: Input should be a valid number"),
        ({**GOOD, "metrics": {"roc_auc": float("nan")}}, "metrics.roc_auc: Input should be a"),
        ({k: v for k, v in GOOD.items() if k != "metrics"}, "metrics: Field required"),
        ({k: v for k, v in GOOD.items() if k != "held_out"}, "held_out: Field required"),
        ({**GOOD, "held_out": {"sha256": "abc", "size": 10}}, "held_out.sha256: String should"),
        ({**GOOD, "held_out": {"sha256": DIGEST}}, "held_out.size: Field required"),
        ({**GOOD, "held_out": {"sha256": DIGEST, "size": 0}}, "held_out.size: Input should be"),
        ({**GOOD, "held_out": {"sha256": DIGEST, "size": 1.5}}, "held_out.size: Input should be"),
        ({**GOOD, "segments": {"DE": 0.9}}, "segments.DE: Input should be a valid dictionary"),
        ({**GOOD, "segments": {"DE": {"roc_auc": None}}}, "segments.DE.roc_auc: Input should"),
        ({"dataset": "holdout"}, "metrics is missing"),
        ([0.9], "must be a JSON object, not list"),
    ],
)
def test_a_bad_evaluation_is_refused_naming_the_field(value: Any, says: str) -> None:
    problem = evaluation_problem(value)
    assert problem is not None and says in problem, problem
    assert "\n" not in problem


def test_the_model_card_refuses_a_bad_evaluation_naming_the_field_inside_it() -> None:
    card = {"owner": "risk-ml", "risk_tier": "high"}
    assert card_problem({**card, "evaluation": GOOD}) is None
    assert card_problem({**card, "evaluation": {"roc_auc": 0.9}}) is None  # flat: readable
    assert card_problem({**card, "evaluation": {**GOOD, "held_out": {"size": 5}}}) == (
        "evaluation.held_out.sha256: Field required"
    )


def test_which_way_is_better() -> None:
    assert [
        higher_is_better(m)
        for m in ("roc_auc", "f1", "log_loss", "rmse", "latency_p99_ms", "ranking_loss")
    ] == [True, True, False, False, False, False]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "gates:\n  medium: {min_metrics: {roc_auc: 0.8}}\n",
            "p.yaml:2: gates.medium: 'medium' is not a model-card risk tier",
        ),
        (
            "gates:\n  high:\n    min_metrics: {roc_auc: 7.5}\n",
            "p.yaml:3: gates.high.min_metrics.roc_auc: 7.5 is outside the range of roc_auc",
        ),
        (
            "gates:\n  high:\n    max_loss: {roc_auc: -0.01}\n",
            "p.yaml:3: gates.high.max_loss.roc_auc: Input should be greater than or equal to 0",
        ),
        (
            "gates:\n  high:\n    max_disparity: {roc_auc: .nan}\n",
            "gates.high.max_disparity.roc_auc: Input should be a finite number",
        ),
        ("gates:\n  high: {}\n", "gates.high: a gate with no check"),
        (
            "gates:\n  high:\n    min_metrics: {x: 0.9}\n    max_metrics: {x: 0.5}\n",
            "gates.high.min_metrics.x: 0.9 exceeds max_metrics x 0.5",
        ),
        (
            "gates:\n  high:\n    min_held_out_size: 0\n",
            "gates.high.min_held_out_size: Input should be greater than or equal to 1",
        ),
        (
            "gates:\n  high:\n    min_metric: {roc_auc: 0.8}\n",
            "gates.high.min_metric: Extra inputs are not permitted",
        ),
        (
            "models:\n  fraud:\n    gates:\n      hi: {min_held_out_size: 10}\n",
            "p.yaml:4: models.fraud.gates.hi: 'hi' is not a model-card risk tier",
        ),
    ],
)
def test_a_bad_gate_is_refused_at_start_with_the_field_and_reason(text: str, says: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, source="p.yaml")
    assert says in str(caught.value), str(caught.value)


def test_gates_are_off_by_default_and_a_model_may_have_its_own() -> None:
    policy = parse_policy(
        "gates:\n  high: {min_metrics: {roc_auc: 0.85}}\nmodels:\n  toy: {gates: {}}\n"
    )
    assert parse_policy("drift: {window: 5m}").gates.configured is False
    assert policy.gates_for("fraud").configured and policy.gates_for("fraud").high is not None
    assert policy.gates_for("toy").configured is False  # an empty override: no gates for it
