"""`driftline schemas export` carries the policy a command was decided under, on the
command and on the deployment event, optional on both (older records have none)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents import cli
from tests.schemas.test_export_estimates import load


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("schemas")
    assert cli.main(["schemas", "export", str(out)]) == 0
    return out


@pytest.mark.parametrize("name", ["Command", "DeploymentEvent"])
def test_the_policy_hash_is_in_the_export_and_optional(exported: Path, name: str) -> None:
    schema = load(exported, name)
    field = schema["properties"]["policy_sha256"]
    digest = next(option for option in field["anyOf"] if option.get("type") == "string")
    assert digest["pattern"] == "^[0-9a-f]{64}$"
    assert "policy_sha256" not in schema["required"]
    assert "policy file" in field["description"]
