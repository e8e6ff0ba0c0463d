"""The MLflow registry backend (agents/controller/registry/mlflow_backend.py), on a
real local MLflow.

No server: MLflow's SQL store on a SQLite file in tmp_path. Creating MLflow's
tables takes about two seconds, so :class:`MlflowFactory` builds one empty
database per session and each test gets a copy of it (about 40 ms).

The behaviour both backends share is tested in test_registry_file.py, on both;
this module checks what is MLflow's own: aliases, tags, the split journal.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, ClassVar

import pytest

from agents.controller.registry import MlflowRegistry, RegistryError, open_registry
from agents.controller.registry.mlflow_backend import (
    JOURNAL_PART_CHARS,
    TAG_JOURNAL,
    TAG_SHA256,
    TAG_VERSION,
)
from schemas.commands import DeploymentState
from tests.agents.controller.cards import CARD

MODEL = "fraud-detector"


class MlflowFactory:
    """Fresh MLflow registries on copies of one migrated SQLite database."""

    _template: ClassVar[Path | None] = None

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch

    def _template_db(self) -> Path:
        if MlflowFactory._template is None:
            from mlflow import MlflowClient

            database = self.scratch / "template.db"
            uri = f"sqlite:///{database}"
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            client.search_experiments()  # creates and migrates the tables
            client.search_registered_models()
            MlflowFactory._template = database
        return MlflowFactory._template

    def __call__(self, directory: Path) -> MlflowRegistry:
        directory.mkdir(parents=True, exist_ok=True)
        database = directory / "mlflow.db"
        shutil.copyfile(self._template_db(), database)
        return MlflowRegistry(f"sqlite:///{database}")


@pytest.fixture
def registry(mlflow_factory: MlflowFactory, tmp_path: Path) -> MlflowRegistry:
    return mlflow_factory(tmp_path / "mlflow")


def _artifact(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / "src" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _two_versions(registry: MlflowRegistry, tmp_path: Path) -> None:
    registry.register(MODEL, "v1", _artifact(tmp_path, "m1.bin", b"one"), model_card=CARD)
    registry.register(MODEL, "v2", _artifact(tmp_path, "m2.bin", b"two"), model_card=CARD)


def test_versions_are_mlflow_model_versions_tagged_with_driftline_names(
    registry: MlflowRegistry, tmp_path: Path
) -> None:
    _two_versions(registry, tmp_path)
    found = registry.client.search_model_versions(f"name = '{MODEL}'")
    by_number = {int(mv.version): mv for mv in found}
    assert sorted(by_number) == [1, 2]
    assert by_number[1].tags[TAG_VERSION] == "v1"
    assert by_number[2].tags[TAG_VERSION] == "v2"
    assert by_number[2].tags[TAG_SHA256] == registry.get(MODEL, "v2").sha256
    # The source is the run's logged copy, not the file we registered from.
    assert by_number[1].source.startswith((tmp_path / "mlflow" / "mlflow-artifacts").as_uri())
    assert by_number[1].source.endswith("/artifact/m1.bin")


def test_state_is_aliases_and_tags_and_a_none_canary_removes_the_alias(
    registry: MlflowRegistry, tmp_path: Path
) -> None:
    from mlflow.exceptions import MlflowException

    _two_versions(registry, tmp_path)
    registry.commit(
        MODEL,
        DeploymentState(champion="v1", canary="v2", canary_weight=0.25, last_known_good="v1"),
        {"head": "abc"},
    )
    client = registry.client
    assert client.get_model_version_by_alias(MODEL, "champion").tags[TAG_VERSION] == "v1"
    assert client.get_model_version_by_alias(MODEL, "canary").tags[TAG_VERSION] == "v2"
    tags = client.get_registered_model(MODEL).tags
    assert float(tags["driftline.canary_weight"]) == 0.25
    assert tags["driftline.last_known_good"] == "v1"

    registry.commit(MODEL, DeploymentState(champion="v2"), {"head": "def"})
    assert client.get_model_version_by_alias(MODEL, "champion").tags[TAG_VERSION] == "v2"
    with pytest.raises(MlflowException, match="alias canary not found"):
        client.get_model_version_by_alias(MODEL, "canary")
    assert "driftline.last_known_good" not in client.get_registered_model(MODEL).tags
    assert registry.load(MODEL) == (DeploymentState(champion="v2"), {"head": "def"})


def _journal_parts(registry: MlflowRegistry) -> dict[str, str]:
    tags = registry.client.get_registered_model(MODEL).tags
    return {key: value for key, value in tags.items() if key.startswith(f"{TAG_JOURNAL}.")}


def test_a_large_journal_is_split_into_tags_that_fit_the_sql_column(
    registry: MlflowRegistry, tmp_path: Path
) -> None:
    _two_versions(registry, tmp_path)
    big: dict[str, Any] = {"applied": [f"command-{i:05d}-é" for i in range(3000)]}
    assert len(json.dumps(big)) > 8 * JOURNAL_PART_CHARS
    registry.commit(MODEL, DeploymentState(champion="v1"), big)
    parts = _journal_parts(registry)
    assert len(parts) >= 8
    assert all(len(value) <= JOURNAL_PART_CHARS for value in parts.values())
    assert registry.load(MODEL)[1] == big

    small = {"applied": ["only-one"]}
    registry.commit(MODEL, DeploymentState(champion="v1"), small)
    registry.commit(MODEL, DeploymentState(champion="v1"), small)  # back in the first slot
    assert registry.load(MODEL)[1] == small
    # The big journal's parts are gone: one part in each slot is left.
    assert sorted(_journal_parts(registry)) == [f"{TAG_JOURNAL}.a.0", f"{TAG_JOURNAL}.b.0"]


def test_a_commit_interrupted_before_the_journal_header_keeps_the_old_journal(
    registry: MlflowRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _two_versions(registry, tmp_path)
    registry.commit(MODEL, DeploymentState(champion="v1"), {"head": "old", "pad": "x" * 9000})
    real_set_tag = registry.client.set_registered_model_tag

    def crash_on_header(name: str, key: str, value: str) -> None:
        if key == TAG_JOURNAL:
            raise RuntimeError("crash before the journal header was written")
        real_set_tag(name, key, value)

    monkeypatch.setattr(registry.client, "set_registered_model_tag", crash_on_header)
    with pytest.raises(RuntimeError, match="crash"):
        registry.commit(MODEL, DeploymentState(champion="v2"), {"head": "new", "pad": "y" * 9000})
    monkeypatch.undo()

    state, journal = registry.load(MODEL)
    # No transactions: the alias moved, but the journal (written last) is the old one,
    # whole, so the controller re-applies the command, which sets the same alias again.
    assert state.champion == "v2"
    assert journal == {"head": "old", "pad": "x" * 9000}


def test_load_refuses_a_damaged_journal(registry: MlflowRegistry, tmp_path: Path) -> None:
    _two_versions(registry, tmp_path)
    registry.commit(MODEL, DeploymentState(champion="v1"), {"head": "abc"})
    registry.client.set_registered_model_tag(MODEL, f"{TAG_JOURNAL}.a.0", '{"head":"abd"}')
    with pytest.raises(RegistryError, match="does not match its checksum"):
        registry.load(MODEL)


def test_an_alias_set_outside_driftline_is_reported(
    registry: MlflowRegistry, tmp_path: Path
) -> None:
    _two_versions(registry, tmp_path)
    run = registry.client.create_run(
        registry.client.get_experiment_by_name("driftline-registry").experiment_id
    )
    foreign = registry.client.create_model_version(
        MODEL, "file:///elsewhere", run_id=run.info.run_id
    )
    registry.client.set_registered_model_alias(MODEL, "champion", foreign.version)
    with pytest.raises(RegistryError, match="which driftline did not register"):
        registry.load(MODEL)
    # ... and such versions are not driftline versions.
    assert [v.version for v in registry.versions(MODEL)] == ["v1", "v2"]


def test_open_registry_with_an_mlflow_sqlite_url(
    mlflow_factory: MlflowFactory, tmp_path: Path
) -> None:
    mlflow_factory(tmp_path / "db")  # a migrated database at tmp_path/db/mlflow.db
    opened = open_registry(f"mlflow+sqlite:///{tmp_path / 'db' / 'mlflow.db'}")
    assert isinstance(opened, MlflowRegistry)
    assert opened.tracking_uri == f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}"
    assert opened.registry_uri == opened.tracking_uri
    assert opened.artifact_location == (tmp_path / "db" / "mlflow-artifacts").as_uri()
    with pytest.raises(RegistryError, match="lacks an MLflow tracking URI"):
        open_registry("mlflow+")
