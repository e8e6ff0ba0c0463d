"""The model card's required fields and what each refusal says."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.model_card import ModelCard, card_problem

GOOD: dict[str, Any] = {"owner": "risk-ml", "risk_tier": "high"}


@pytest.mark.parametrize(
    ("card", "says"),
    [
        (None, "the model card is missing: owner and risk_tier are required"),
        ({}, "owner is missing"),
        ({"risk_tier": "high"}, "owner is missing"),
        ({"owner": None, "risk_tier": "high"}, "owner is missing"),
        ({"owner": "risk-ml"}, "risk_tier is missing: set it to one of minimal, limited, high"),
        ({"owner": "  ", "risk_tier": "high"}, "owner is blank"),
        ({"owner": "risk-ml", "risk_tier": "medium"}, "risk_tier 'medium' is not a tier"),
        ({"owner": "risk-ml", "risk_tier": "unacceptable"}, "prohibited practice"),
        ({**GOOD, "training_data": {"description": "x", "sha256": "abc"}},
         "training_data.sha256: String should match pattern"),
        ({**GOOD, "training_data": {"sha256": "0" * 64}}, "training_data.description"),
        ({**GOOD, "evaluation": [0.9]}, "evaluation: Input should be a valid dictionary"),
        ([GOOD], "must be a JSON object, not list"),
    ],
)
def test_a_card_without_owner_or_tier_is_refused_naming_the_field(card: Any, says: str) -> None:
    problem = card_problem(card)
    assert problem is not None and says in problem
    assert "\n" not in problem


def test_a_complete_card_keeps_its_free_fields_and_reads_text_training_data() -> None:
    card = {**GOOD, "purpose": "scores card payments", "limitations": ["EU only"],
            "training_data": "s3://data/2026-01", "evaluation": {"roc_auc": 0.91}}
    assert card_problem(card) is None
    parsed = ModelCard.model_validate(card)
    assert parsed.training_data is not None
    assert parsed.training_data.description == "s3://data/2026-01"
    assert parsed.model_extra == {"limitations": ["EU only"]}
    for tier in ("minimal", "limited", "high"):
        assert card_problem({"owner": "o", "risk_tier": tier}) is None
