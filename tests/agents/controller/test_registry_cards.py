"""Registering needs a model card with owner and risk tier, on both backends and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents import cli
from agents.controller.registry import FileRegistry, MlflowRegistry, Registry, RegistryError
from agents.controller.registry.mlflow_backend import TAG_OWNER, TAG_RISK_TIER
from tests.agents.controller.test_registry_file import MODEL, _file

CARD = {
    "owner": "risk-ml",
    "risk_tier": "high",
    "purpose": "scores card payments for fraud",
    "training_data": {"description": "payments 2026-01", "sha256": "ab" * 32},
    "evaluation": {"roc_auc": 0.91},
    "limitations": ["EU only"],
}


@pytest.fixture
def backend(empty_registry: Registry) -> Registry:
    """Empty, on both registries (conftest)."""
    return empty_registry


@pytest.mark.parametrize(
    ("card", "field"),
    [(None, "the model card is missing: owner and risk_tier"), ({"risk_tier": "high"}, "owner"),
     ({"owner": "risk-ml"}, "risk_tier"), ({"owner": "risk-ml", "risk_tier": "low"}, "risk_tier")],
)
def test_a_card_without_owner_or_tier_is_refused_and_nothing_is_stored(
    backend: Registry, tmp_path: Path, card: dict[str, str] | None, field: str
) -> None:
    with pytest.raises(RegistryError, match=f"Model card of {MODEL} v1 refused: {field}"):
        backend.register(MODEL, "v1", _file(tmp_path, "a.bin", b"one"), model_card=card)
    assert backend.get(MODEL, "v1") is None
    assert backend.versions(MODEL) == []


def test_both_backends_keep_the_governance_fields(backend: Registry, tmp_path: Path) -> None:
    backend.register(MODEL, "v1", _file(tmp_path, "a.bin", b"one"), model_card=CARD)
    found = backend.get(MODEL, "v1")
    assert found is not None and found.model_card == CARD
    if isinstance(backend, MlflowRegistry):  # searchable in MLflow as plain tags too
        tags = backend.client.get_model_version(MODEL, "1").tags
        assert (tags[TAG_OWNER], tags[TAG_RISK_TIER]) == ("risk-ml", "high")


def test_a_version_registered_before_the_rule_stays_readable(tmp_path: Path) -> None:
    files = FileRegistry(tmp_path / "registry")
    files.register(MODEL, "v1", _file(tmp_path, "a.bin", b"one"), model_card=CARD)
    path = tmp_path / "registry" / MODEL / "versions" / "v1" / "version.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "model_card": {"note": "from 2025"}}))
    found = files.get(MODEL, "v1")
    assert found is not None and found.model_card == {"note": "from 2025"}
    assert files.verify(MODEL, "v1") is None


def test_cli_register_names_the_field_and_the_card_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"owner": "risk-ml"}))
    args = ["registry", "register", "--registry", str(tmp_path / "reg"), "--model", MODEL,
            "--version", "v1", "--artifact", str(_file(tmp_path, "a.bin", b"one")),
            "--model-card", str(card)]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "risk_tier is missing" in err and str(card) in err
    assert cli.main(args[:-2]) == 2
    assert "(no --model-card given)" in capsys.readouterr().err


def test_cli_register_keeps_evaluation_results_in_the_card(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card, evaluation = tmp_path / "card.json", tmp_path / "eval.json"
    card.write_text(json.dumps({"owner": "risk-ml", "risk_tier": "limited"}))
    evaluation.write_text(json.dumps({"roc_auc": 0.93, "dataset": "holdout 2026-02"}))
    assert cli.main(["registry", "register", "--registry", str(tmp_path / "reg"), "--model",
                     MODEL, "--version", "v1", "--artifact",
                     str(_file(tmp_path, "a.bin", b"one")), "--model-card", str(card),
                     "--evaluation", str(evaluation)]) == 0
    found = FileRegistry(tmp_path / "reg").get(MODEL, "v1")
    assert found is not None
    assert found.model_card["evaluation"] == {"roc_auc": 0.93, "dataset": "holdout 2026-02"}
    capsys.readouterr()
