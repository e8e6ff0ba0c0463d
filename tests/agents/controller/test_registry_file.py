"""The model registry: the contract every backend meets, then the file registry's own guarantees.

The contract tests run on both backends through the parametrised ``registry``
fixture: FileRegistry on tmp_path and MlflowRegistry on a real local MLflow
(SQLite store in tmp_path, see test_registry_mlflow.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest

from agents.controller.registry import (
    MAX_DOCUMENT_BYTES,
    FileRegistry,
    ModelVersion,
    Registry,
    RegistryError,
    hash_artifact,
    open_registry,
)
from schemas.commands import DeploymentState
from tests.agents.controller.cards import CARD

MODEL = "fraud-detector"


@pytest.fixture
def registry(empty_registry: Registry) -> Registry:
    """Empty, on both registries (conftest): these tests register their own versions."""
    return empty_registry


def _file(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / "src" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def _stored(found: ModelVersion) -> Path:
    """The local path of a version's stored artifact (a path, or a file: URI for MLflow)."""
    parsed = urlparse(found.uri)
    return Path(url2pathname(parsed.path)) if parsed.scheme == "file" else Path(found.uri)


#: A walk of this tree meets model.json first; sorted by path, a/weights.bin comes first.
MODEL_DIR = {
    "model.json": b'{"layers": 3}',
    "a/weights.bin": b"\x00\x01\x02",
    "sub/encoder.bin": b"\x03\x04",
}

# -- the contract, on both backends --------------------------------------------


def test_register_get_versions_and_models(registry: Registry, tmp_path: Path) -> None:
    card = {
        "intended_use": "card-not-present fraud",
        "owner": "risk-ml",
        "risk_tier": "high",
        "metrics": {"roc_auc": 0.91},
        "limitations": ["EU only"],
    }
    first = registry.register(
        MODEL,
        "v10",
        _file(tmp_path, "model.pkl", b"weights-10"),
        metadata={"training_data": "s3://data/2026-01"},
        model_card=card,
    )
    registry.register(MODEL, "v2", _tree(tmp_path / "dir-v2", MODEL_DIR), model_card=CARD)
    registry.register(MODEL, "v1", _file(tmp_path, "model.pkl", b"weights-1"), model_card=CARD)
    registry.register("churn", "2026.01.1", _file(tmp_path, "churn.bin", b"churn"), model_card=CARD)

    assert first == registry.get(MODEL, "v10")
    assert first.model == MODEL and first.version == "v10"
    assert first.sha256 == hashlib.sha256(b"weights-10").hexdigest()
    assert first.metadata == {"training_data": "s3://data/2026-01"}
    assert first.model_card == card
    assert first.created_at.tzinfo is not None
    assert first.created_at.utcoffset() == UTC.utcoffset(None)
    assert _stored(first).read_bytes() == b"weights-10"

    listed = registry.versions(MODEL)
    assert [v.version for v in listed] == ["v10", "v2", "v1"]  # registration order, not names
    assert [v.created_at for v in listed] == sorted(v.created_at for v in listed)
    assert listed[1].sha256 == hash_artifact(tmp_path / "dir-v2")
    assert listed[1].metadata == {} and listed[1].model_card == CARD
    assert registry.models() == ["churn", MODEL]
    assert registry.get(MODEL, "v3") is None
    assert registry.get("unknown", "v1") is None
    assert registry.versions("unknown") == []


def test_a_registered_version_cannot_be_registered_again(
    registry: Registry, tmp_path: Path
) -> None:
    original = registry.register(
        MODEL, "v1", _file(tmp_path, "a.bin", b"original"), model_card=CARD
    )
    with pytest.raises(RegistryError, match="already registered and versions are immutable"):
        registry.register(MODEL, "v1", _file(tmp_path, "b.bin", b"replacement"), model_card=CARD)
    assert registry.get(MODEL, "v1") == original
    assert [v.version for v in registry.versions(MODEL)] == ["v1"]


@pytest.mark.parametrize(
    "bad", ["../x", "..", ".hidden", "a/b", "/etc", "", "a b", "x" * 129, "mödel", "v1\n"]
)
def test_bad_names_are_refused(registry: Registry, tmp_path: Path, bad: str) -> None:
    artifact = _file(tmp_path, "a.bin", b"bytes")
    with pytest.raises(RegistryError, match=r"name .* is not allowed"):
        registry.register(bad, "v1", artifact, model_card=CARD)
    with pytest.raises(RegistryError, match=r"Version name .* is not allowed"):
        registry.register(MODEL, bad, artifact, model_card=CARD)
    with pytest.raises(RegistryError, match="is not allowed"):
        registry.get(bad, "v1")
    with pytest.raises(RegistryError, match="is not allowed"):
        registry.load(bad)
    with pytest.raises(RegistryError, match="is not allowed"):
        registry.commit(bad, DeploymentState(), {})
    assert registry.models() == []
    assert sorted(p.name for p in tmp_path.iterdir()) in (["mlflow", "src"], ["registry", "src"])


def test_verify_accepts_an_untouched_artifact(registry: Registry, tmp_path: Path) -> None:
    registry.register(MODEL, "v1", _file(tmp_path, "a.bin", b"bytes"), model_card=CARD)
    registry.register(MODEL, "v2", _tree(tmp_path / "dir", MODEL_DIR), model_card=CARD)
    assert registry.verify(MODEL, "v1") is None
    assert registry.verify(MODEL, "v2") is None


def test_verify_reports_a_tampered_file_artifact_with_both_hashes(
    registry: Registry, tmp_path: Path
) -> None:
    found = registry.register(MODEL, "v1", _file(tmp_path, "a.bin", b"bytes"), model_card=CARD)
    _stored(found).write_bytes(b"bytez")
    problem = registry.verify(MODEL, "v1")
    assert problem is not None
    assert "checksum mismatch" in problem
    assert f"registered {found.sha256[:12]}..." in problem
    assert f"now {hashlib.sha256(b'bytez').hexdigest()[:12]}..." in problem


def test_verify_reports_a_file_added_to_a_directory_artifact(
    registry: Registry, tmp_path: Path
) -> None:
    found = registry.register(MODEL, "v1", _tree(tmp_path / "dir", MODEL_DIR), model_card=CARD)
    (_stored(found) / "sub" / "backdoor.bin").write_bytes(b"!")
    problem = registry.verify(MODEL, "v1")
    assert problem is not None and "checksum mismatch" in problem
    assert found.sha256[:12] in problem
    assert hash_artifact(_stored(found))[:12] in problem


def test_verify_reports_a_missing_version_and_a_missing_artifact(
    registry: Registry, tmp_path: Path
) -> None:
    assert registry.verify(MODEL, "v9") == (
        f"{MODEL} v9 is not registered: register it before promoting or restoring it."
    )
    found = registry.register(MODEL, "v1", _file(tmp_path, "a.bin", b"bytes"), model_card=CARD)
    _stored(found).unlink()
    problem = registry.verify(MODEL, "v1")
    assert problem is not None and problem.startswith(f"The artifact of {MODEL} v1 is missing at")


def test_load_of_an_unknown_model_gives_the_defaults(registry: Registry) -> None:
    assert registry.load(MODEL) == (DeploymentState(), {})


def test_commit_then_load_round_trips_state_and_journal(registry: Registry, tmp_path: Path) -> None:
    registry.register(MODEL, "v1", _file(tmp_path, "a.bin", b"one"), model_card=CARD)
    registry.register(MODEL, "v2", _file(tmp_path, "b.bin", b"two"), model_card=CARD)
    journal = {
        "head": "9f" * 32,
        "applied": ["cmd-1", "cmd-2"],
        "last_event": {
            "action": "promote",
            "reason": "AUC ≥ 0.9",
            "n": 3,
            "ok": True,
            "none": None,
            "weight": 0.05,
        },
    }
    state = DeploymentState(champion="v1", canary="v2", canary_weight=0.05, last_known_good="v1")
    registry.commit(MODEL, state, journal)
    assert registry.load(MODEL) == (state, journal)

    after_promotion = DeploymentState(champion="v2", last_known_good="v2")
    registry.commit(MODEL, after_promotion, {"head": "ab" * 32})
    assert registry.load(MODEL) == (after_promotion, {"head": "ab" * 32})
    assert registry.models() == [MODEL]


def test_commit_of_a_model_without_versions_keeps_the_journal(registry: Registry) -> None:
    registry.commit(MODEL, DeploymentState(), {"head": "genesis"})
    assert registry.load(MODEL) == (DeploymentState(), {"head": "genesis"})
    assert registry.models() == [MODEL]


def test_commit_refuses_unregistered_versions_and_bad_journals(
    registry: Registry, tmp_path: Path
) -> None:
    registry.register(MODEL, "v1", _file(tmp_path, "a.bin", b"one"), model_card=CARD)
    registry.commit(MODEL, DeploymentState(champion="v1"), {"head": "h1"})
    with pytest.raises(RegistryError, match=r"names fraud-detector v7 as canary.*register it"):
        registry.commit(MODEL, DeploymentState(champion="v1", canary="v7"), {"head": "h2"})
    with pytest.raises(RegistryError, match=f"over the limit of {MAX_DOCUMENT_BYTES}"):
        registry.commit(MODEL, DeploymentState(champion="v1"), {"pad": "x" * MAX_DOCUMENT_BYTES})
    with pytest.raises(RegistryError, match="must be JSON-serialisable"):
        registry.commit(MODEL, DeploymentState(champion="v1"), {"ids": {1, 2}})
    with pytest.raises(RegistryError, match="must be JSON-serialisable"):
        registry.register(
            MODEL, "v2", _file(tmp_path, "b.bin", b"two"), metadata={"auc": float("nan")},
            model_card=CARD,
        )
    assert registry.load(MODEL) == (DeploymentState(champion="v1"), {"head": "h1"})
    assert registry.get(MODEL, "v2") is None


def test_a_directory_artifact_hashes_deterministically(registry: Registry, tmp_path: Path) -> None:
    forward = _tree(tmp_path / "forward", MODEL_DIR)
    backward = _tree(tmp_path / "backward", dict(reversed(list(MODEL_DIR.items()))))
    os.utime(backward / "model.json", (0, 0))  # timestamps do not count
    registered = registry.register(MODEL, "v1", forward, model_card=CARD)
    assert registered.sha256 == hash_artifact(forward) == hash_artifact(backward)
    # The documented recipe, recomputed by hand.
    manifest = b"driftline-directory-sha256-v1\n" + b"".join(
        f"{hashlib.sha256(MODEL_DIR[p]).hexdigest()} {json.dumps(p)}\n".encode()
        for p in sorted(MODEL_DIR)
    )
    assert registered.sha256 == hashlib.sha256(manifest).hexdigest()
    # Names and contents count.
    (backward / "model.json").rename(backward / "model2.json")
    assert hash_artifact(backward) != registered.sha256
    changed = _tree(tmp_path / "other", {**MODEL_DIR, "sub/encoder.bin": b"\x03\x05"})
    assert hash_artifact(changed) != registered.sha256
    # A directory is never confused with a file holding the same bytes.
    single = _tree(tmp_path / "single", {"x": b"abc"})
    assert hash_artifact(single) != hash_artifact(single / "x")


def test_a_directory_artifact_with_a_symbolic_link_is_refused(
    registry: Registry, tmp_path: Path
) -> None:
    tree = _tree(tmp_path / "dir", MODEL_DIR)
    (tree / "link.bin").symlink_to(tmp_path / "secret")
    with pytest.raises(RegistryError, match=r"'link.bin' in artifact .* is a symbolic link"):
        registry.register(MODEL, "v1", tree, model_card=CARD)
    assert registry.get(MODEL, "v1") is None


def test_a_missing_artifact_is_refused(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="does not exist"):
        registry.register(MODEL, "v1", tmp_path / "nowhere.bin", model_card=CARD)


# -- the file registry's own guarantees ------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> FileRegistry:
    return FileRegistry(tmp_path / "registry")


def test_layout_on_disk(files: FileRegistry, tmp_path: Path) -> None:
    files.register(
        MODEL,
        "v1",
        _file(tmp_path, "model.pkl", b"one"),
        metadata={"k": 1},
        model_card={"owner": "risk-ml", "risk_tier": "limited"},
    )
    files.register(MODEL, "v2", _tree(tmp_path / "dir", MODEL_DIR), model_card=CARD)
    files.commit(MODEL, DeploymentState(champion="v1"), {"head": "h"})
    version_dir = tmp_path / "registry" / MODEL / "versions" / "v1"
    assert (version_dir / "artifact" / "model.pkl").read_bytes() == b"one"
    record = json.loads((version_dir / "version.json").read_text())
    assert record["uri"] == "artifact/model.pkl"  # relative: the root can move
    assert record["sha256"] == hashlib.sha256(b"one").hexdigest()
    assert (record["metadata"], record["model_card"]) == (
        {"k": 1}, {"owner": "risk-ml", "risk_tier": "limited"}
    )
    v2_artifact = tmp_path / "registry" / MODEL / "versions" / "v2" / "artifact"
    assert (v2_artifact / "sub" / "encoder.bin").read_bytes() == MODEL_DIR["sub/encoder.bin"]
    assert files.get(MODEL, "v2").uri == str(v2_artifact)
    state = json.loads((tmp_path / "registry" / MODEL / "state.json").read_text())
    assert state == {
        "format": 1,
        "journal": {"head": "h"},
        "state": {"champion": "v1", "canary": None, "canary_weight": 0.0, "last_known_good": None},
    }


def test_a_crash_during_commit_leaves_the_old_state_whole(
    files: FileRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files.register(MODEL, "v1", _file(tmp_path, "a.bin", b"one"), model_card=CARD)
    files.register(MODEL, "v2", _file(tmp_path, "b.bin", b"two"), model_card=CARD)
    files.commit(MODEL, DeploymentState(champion="v1"), {"head": "old"})
    state_file = tmp_path / "registry" / MODEL / "state.json"
    before = state_file.read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError("simulated crash at os.replace")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        files.commit(MODEL, DeploymentState(champion="v2", last_known_good="v1"), {"head": "new"})
    monkeypatch.undo()

    assert state_file.read_bytes() == before
    assert files.load(MODEL) == (DeploymentState(champion="v1"), {"head": "old"})
    assert sorted(p.name for p in state_file.parent.iterdir()) == ["state.json", "versions"]
    files.commit(MODEL, DeploymentState(champion="v2"), {"head": "new"})
    assert files.load(MODEL) == (DeploymentState(champion="v2"), {"head": "new"})


def test_commit_replaces_the_state_file_instead_of_rewriting_it(
    files: FileRegistry, tmp_path: Path
) -> None:
    files.register(MODEL, "v1", _file(tmp_path, "a.bin", b"one"), model_card=CARD)
    files.commit(MODEL, DeploymentState(), {"head": "old"})
    state_file = tmp_path / "registry" / MODEL / "state.json"
    with state_file.open("rb") as reader:  # a reader that opened the file before the commit
        files.commit(MODEL, DeploymentState(champion="v1"), {"head": "new" * 1000})
        assert json.loads(reader.read())["journal"] == {"head": "old"}  # still whole, still old
    assert json.loads(state_file.read_bytes())["journal"] == {"head": "new" * 1000}


def test_a_failed_registration_leaves_no_version_behind(
    files: FileRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(src: str, dst: str) -> None:
        raise OSError("simulated crash at os.rename")

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(OSError, match="simulated crash"):
        files.register(MODEL, "v1", _file(tmp_path, "a.bin", b"one"), model_card=CARD)
    monkeypatch.undo()
    assert files.get(MODEL, "v1") is None
    assert list((tmp_path / "registry" / MODEL / "versions").iterdir()) == []
    again = files.register(MODEL, "v1", _file(tmp_path, "a.bin", b"one"), model_card=CARD)
    assert again.version == "v1"


def test_a_corrupt_state_file_is_reported(files: FileRegistry, tmp_path: Path) -> None:
    files.commit(MODEL, DeploymentState(), {})
    (tmp_path / "registry" / MODEL / "state.json").write_text('{"state": {"champion": ')
    with pytest.raises(RegistryError, match=r"state.json is not valid JSON.*restore it"):
        files.load(MODEL)


def test_a_version_file_pointing_outside_its_directory_is_refused(
    files: FileRegistry, tmp_path: Path
) -> None:
    files.register(MODEL, "v1", _file(tmp_path, "a.bin", b"one"), model_card=CARD)
    record_file = tmp_path / "registry" / MODEL / "versions" / "v1" / "version.json"
    record = json.loads(record_file.read_text())
    record_file.write_text(json.dumps({**record, "uri": "../../../../src/a.bin"}))
    with pytest.raises(RegistryError, match=r"leaves .* restore it from a backup"):
        files.get(MODEL, "v1")


def test_open_registry_with_a_path_or_a_file_url(tmp_path: Path) -> None:
    by_path = open_registry(str(tmp_path / "a"))
    by_url = open_registry((tmp_path / "b").as_uri())
    assert isinstance(by_path, FileRegistry) and by_path.root == tmp_path / "a"
    assert isinstance(by_url, FileRegistry) and by_url.root == tmp_path / "b"
    with pytest.raises(RegistryError, match="names a remote host"):
        open_registry("file://server/share")
    with pytest.raises(RegistryError, match="is not supported"):
        open_registry("s3://bucket/registry")
