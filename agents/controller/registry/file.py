"""The embedded model registry: plain files under one root directory.

Layout::

    <root>/<model>/versions/<version>/artifact/<file name>   a file artifact, or
    <root>/<model>/versions/<version>/artifact/...           a directory artifact's tree
    <root>/<model>/versions/<version>/version.json           sha256, created_at, uri,
                                                              metadata, model_card
    <root>/<model>/state.json                                {"format", "state", "journal"}

``uri`` in version.json is relative to the version's directory, so the root
can be moved or mounted elsewhere; :class:`ModelVersion` gets the absolute path.

Atomicity and crashes:

* A version is assembled in a hidden staging directory beside the others
  (``versions/.staging-*``), fsynced, then renamed into place with one
  ``os.rename``. Renaming a directory onto an existing, non-empty one fails,
  so two processes registering the same version cannot both succeed, and a
  reader sees either no version or a complete one. A crash leaves at most a
  staging directory, which nothing reads (names cannot start with a dot) and
  which may be deleted.
* state.json, which holds the deployment state *and* the controller's journal,
  is replaced in one atomic write: a temporary file in the same directory,
  fsync, ``os.replace``, fsync of the directory. A crash leaves the old pair
  or the new pair, never a mix, and a concurrent reader never sees a
  half-written file (it may see the old one).

Size: each version holds a full copy of its artifact (the registry never
deletes versions; remove old ones by hand when nothing names them), and
version.json and state.json are bounded by the 64 KiB limit on metadata, model
card and journal (:data:`~agents.controller.registry.base.MAX_DOCUMENT_BYTES`).

Concurrent commits of the same model from two controllers are last-writer-wins;
run one controller per model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agents.controller.registry.base import (
    NAME_PATTERN,
    ModelVersion,
    Registry,
    RegistryError,
    hash_artifact,
)
from schemas.commands import DeploymentState
from schemas.errors import explain

STATE_FILE = "state.json"
VERSION_FILE = "version.json"
ARTIFACT_DIR = "artifact"
STATE_FORMAT = 1


def _fsync_path(path: Path) -> None:
    """Flush a file's or a directory's data and entries to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for current, _dirnames, filenames in os.walk(root):
        for name in filenames:
            _fsync_path(Path(current) / name)
        _fsync_path(Path(current))


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` so that readers see the old or the new file, whole.

    The temporary file lives in the same directory (``os.replace`` is atomic
    only within one file system) and is removed if anything fails before the
    replace.
    """
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o644)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_path(path.parent)


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, None if the file does not exist."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise RegistryError(f"{path} is not valid JSON ({exc}): restore it from a backup.") from exc
    if not isinstance(value, dict):
        raise RegistryError(f"{path} does not hold a JSON object: restore it from a backup.")
    return value


class FileRegistry(Registry):
    """A registry in a directory tree (see the module docstring for layout and guarantees)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryError(
                f"Cannot create the registry directory {self.root}: {exc}."
            ) from exc

    def __repr__(self) -> str:
        return f"FileRegistry({str(self.root)!r})"

    def _versions_dir(self, model: str) -> Path:
        return self.root / model / "versions"

    # -- versions -------------------------------------------------------------

    def _register(
        self,
        model: str,
        version: str,
        artifact: Path,
        *,
        metadata: dict[str, Any],
        model_card: dict[str, Any],
    ) -> ModelVersion:
        versions_dir = self._versions_dir(model)
        versions_dir.mkdir(parents=True, exist_ok=True)
        target = versions_dir / version
        staging = Path(tempfile.mkdtemp(prefix=f".staging-{version}-", dir=versions_dir))
        try:
            stored = staging / ARTIFACT_DIR
            if artifact.is_dir():
                # Links are copied as links so that hash_artifact refuses them.
                shutil.copytree(artifact, stored, symlinks=True)
            else:
                stored.mkdir()
                stored = stored / artifact.name
                shutil.copyfile(artifact, stored)
            sha256 = hash_artifact(stored, label=str(artifact))
            record = {
                "model": model,
                "version": version,
                "sha256": sha256,
                "uri": stored.relative_to(staging).as_posix(),
                "created_at": datetime.now(UTC).isoformat(),
                "metadata": metadata,
                "model_card": model_card,
            }
            (staging / VERSION_FILE).write_text(
                json.dumps(record, ensure_ascii=False, indent=2), encoding="utf-8"
            )
            _fsync_tree(staging)
            try:
                os.rename(staging, target)
            except OSError as exc:
                if target.exists():
                    raise RegistryError(
                        f"{model} {version} was registered by someone else meanwhile and "
                        f"versions are immutable: register under a new version name."
                    ) from exc
                raise
            _fsync_path(versions_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        found = self._get(model, version)
        assert found is not None  # just renamed into place
        return found

    def _get(self, model: str, version: str) -> ModelVersion | None:
        version_dir = self._versions_dir(model) / version
        record = _read_json(version_dir / VERSION_FILE)
        if record is None:
            return None
        try:
            artifact = version_dir / record["uri"]
            # The artifact must stay inside its version's directory, whatever version.json says.
            if not artifact.resolve().is_relative_to((version_dir / ARTIFACT_DIR).resolve()):
                raise ValueError(f"uri {record['uri']!r} leaves {version_dir / ARTIFACT_DIR}")
            return ModelVersion(
                model=model,
                version=version,
                sha256=record["sha256"],
                uri=str(artifact),
                created_at=datetime.fromisoformat(record["created_at"]),
                metadata=record["metadata"],
                model_card=record["model_card"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryError(
                f"{version_dir / VERSION_FILE} is damaged ({exc!r}): restore it from a backup."
            ) from exc

    def _versions(self, model: str) -> list[ModelVersion]:
        versions_dir = self._versions_dir(model)
        if not versions_dir.is_dir():
            return []
        found = [
            self._get(model, entry.name)
            for entry in versions_dir.iterdir()
            if NAME_PATTERN.fullmatch(entry.name)
        ]
        # Registration time orders them; the name only breaks (unlikely) ties.
        return sorted((v for v in found if v is not None), key=lambda v: (v.created_at, v.version))

    def _models(self) -> list[str]:
        return [
            entry.name
            for entry in self.root.iterdir()
            if NAME_PATTERN.fullmatch(entry.name)
            and ((entry / STATE_FILE).is_file() or (entry / "versions").is_dir())
        ]

    def _stored_hash(self, found: ModelVersion) -> str:
        return hash_artifact(Path(found.uri))

    # -- deployment state -----------------------------------------------------

    def _load(self, model: str) -> tuple[DeploymentState, dict[str, Any]]:
        path = self.root / model / STATE_FILE
        record = _read_json(path)
        if record is None:
            return DeploymentState(), {}
        try:
            state = DeploymentState.model_validate(record.get("state"))
        except ValidationError as exc:
            raise RegistryError(
                f"{path} holds an invalid state ({explain(exc, where_empty='state')}): "
                f"restore it from a backup."
            ) from exc
        journal = record.get("journal")
        if not isinstance(journal, dict):
            raise RegistryError(f"{path} has no journal object: restore it from a backup.")
        return state, journal

    def _commit(self, model: str, state: DeploymentState, journal_json: str) -> None:
        model_dir = self.root / model
        model_dir.mkdir(exist_ok=True)
        record = {
            "format": STATE_FORMAT,
            "state": state.model_dump(mode="json"),
            "journal": json.loads(journal_json),
        }
        data = json.dumps(record, ensure_ascii=False, indent=2).encode("utf-8")
        atomic_write(model_dir / STATE_FILE, data)
