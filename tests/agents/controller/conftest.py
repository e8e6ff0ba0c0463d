"""The controller's test set-up, shared by its test files: signed commands, a controller
on a registry of three versions (files, and a real MLflow on SQLite), the commands fed
at increasing offsets; and the gate tests' registry of evaluated high-tier versions."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agents.controller.handler import Controller
from agents.controller.registry import FileRegistry, Registry, open_registry
from agents.inputs.codec import Origin
from schemas.commands import Command, DeploymentEvent
from schemas.policy import Policy
from streams.policy.commands import command_id, sign

KEY = b"0123456789abcdef0123456789abcdef"
T0 = datetime(2026, 11, 1, tzinfo=UTC)
DIGEST = "3f" * 32
GATES = """
gates:
  high:
    min_metrics: {roc_auc: 0.85}
    max_loss: {roc_auc: 0.02}
    min_held_out_size: 1000
"""


def command(type_: str, *, key: bytes | None = KEY, model: str = "fraud", **kw: Any) -> Command:
    cid = command_id(
        type_,
        model,
        from_version=kw.get("from_version"),
        to_version=kw.get("to_version"),
        canary_weight=kw.get("canary_weight"),
        approves=kw.get("approves"),
        nonce=kw.pop("nonce", ""),
    )
    c = Command(
        command_id=cid,
        type=type_,
        model=model,
        reason=f"test {type_}",  # type: ignore[arg-type]
        issued_at=T0,
        **kw,
    )
    return sign(c, key) if key else c


def controller(registry: Any, policy: Policy | None = None, **kw: Any) -> Controller:
    return Controller(registry, KEY, policy or Policy(), **kw)


#: offsets of the commands topic, increasing across feeds as a topic's do
OFFSETS = itertools.count()


def feed(ctl: Controller, *commands: Command, at: int | None = None) -> list[DeploymentEvent]:
    """Hand the controller ``commands`` at the next offsets (or from offset ``at``)."""
    events: list[DeploymentEvent] = []
    for c in commands:
        offset = next(OFFSETS) if at is None else at
        at = None if at is None else at + 1
        outcome = ctl.handle(c.model_dump_json().encode(), Origin("commands", 0, offset), {})
        assert not outcome.dead
        events += outcome.reports  # type: ignore[arg-type]
    return events


def evaluation(roc_auc: float, size: int = 5000) -> dict[str, Any]:
    return {"metrics": {"roc_auc": roc_auc}, "held_out": {"sha256": DIGEST, "size": size}}


def gated_registry(tmp_path: Path) -> FileRegistry:
    """v1 (0.90), v2 (0.81: fails ``GATES``), v3 (0.89), v4 (no evaluation), all high tier."""
    reg = open_registry(str(tmp_path / "registry"))
    for version, ev in (
        ("v1", evaluation(0.90)),
        ("v2", evaluation(0.81)),
        ("v3", evaluation(0.89)),
        ("v4", None),
    ):
        artifact = tmp_path / f"{version}.bin"
        artifact.write_bytes(version.encode())
        reg.register(
            "fraud",
            version,
            artifact,
            model_card={"owner": "risk-ml", "risk_tier": "high", "evaluation": ev},
        )
    return reg  # type: ignore[return-value]


@pytest.fixture(scope="session")
def mlflow_factory(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.agents.controller.test_registry_mlflow import MlflowFactory

    return MlflowFactory(tmp_path_factory.mktemp("mlflow-template"))


@pytest.fixture(params=["file", "mlflow"])
def empty_registry(request: pytest.FixtureRequest, tmp_path: Path) -> Registry:
    """No model yet, on files and on a real MLflow on SQLite."""
    if request.param == "file":
        return FileRegistry(tmp_path / "registry")
    factory = request.getfixturevalue("mlflow_factory")
    return factory(tmp_path / "mlflow")  # type: ignore[no-any-return]


@pytest.fixture
def registry(empty_registry: Registry, tmp_path: Path) -> Registry:
    """v1, v2, v3 of ``fraud`` (minimal tier), on both registries."""
    for version in ("v1", "v2", "v3"):
        artifact = tmp_path / f"model-{version}.bin"
        artifact.write_bytes(f"weights of {version}".encode())
        empty_registry.register(
            "fraud", version, artifact, model_card={"owner": "risk-team", "risk_tier": "minimal"}
        )
    return empty_registry
