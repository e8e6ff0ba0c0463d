"""The model registry interface of the deployment controller, and what all backends share.

A registry keeps two kinds of things for each model:

* immutable **versions**: an artifact (a file or a directory), its SHA-256 as
  registered, free metadata and a model card;
* the **deployment state** (champion, canary, canary weight, last known good,
  shadow, and the standby a blue-green switch keeps ready) together with the
  controller's **journal** (chain head, recently applied command ids, ...),
  which the controller loads at start and commits after each command it applies.

:class:`Registry` does the checks every backend needs (names, JSON-ness and
size of documents, that a committed state only names registered versions) in
its public methods and leaves storage to the ``_``-prefixed hooks of a
backend, so the backends cannot drift apart on what they accept.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from schemas.commands import DeploymentState
from schemas.errors import DriftlineError
from schemas.model_card import card_problem

#: Model and version names: one safe path component, also a valid MLflow model name.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: Largest journal, metadata or model card, as compact UTF-8 JSON. The journal is
#: the controller's bookkeeping (chain head, recent command ids), not a log.
MAX_DOCUMENT_BYTES = 64 * 1024
#: A directory artifact's hash starts from this, so it can never equal a file's.
DIRECTORY_HASH_PREFIX = b"driftline-directory-sha256-v1\n"
_CHUNK = 1024 * 1024


class RegistryError(DriftlineError):
    """A registry operation was refused or failed; the message says what to do."""


@dataclass(frozen=True)
class ModelVersion:
    """One registered, immutable version of a model."""

    model: str
    version: str
    sha256: str  # of the artifact as registered (hex)
    uri: str  # where the artifact lives: a path (file registry), the source URI (MLflow)
    created_at: datetime  # UTC
    metadata: dict[str, Any]  # free: training data location, metrics, ...
    model_card: dict[str, Any]  # intended_use, owner, risk_tier, training_data, limitations ...


def check_name(kind: str, value: object) -> str:
    """``value`` if it is a valid model or version name, else a :class:`RegistryError`.

    The pattern makes every name a single, non-hidden path component, so a name
    can never climb out of the file registry's root (``../x``, ``/etc``, ``.``).
    """
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise RegistryError(
            f"{kind} name {value!r} is not allowed: use 1 to 128 letters, digits, '.', '_' or "
            f"'-', starting with a letter or digit (for example 'fraud-detector' or 'v2')."
        )
    return value


def dump_document(what: str, value: dict[str, Any] | None) -> str:
    """``value`` as compact JSON text, refused if it is not a JSON object or too large."""
    value = {} if value is None else value
    if not isinstance(value, dict):
        raise RegistryError(
            f"The {what} must be a JSON object (a dict), not {type(value).__name__}."
        )
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RegistryError(
            f"The {what} must be JSON-serialisable (str, number, bool, None, list, dict "
            f"with str keys; no NaN): {exc}."
        ) from exc
    size = len(text.encode("utf-8"))
    if size > MAX_DOCUMENT_BYTES:
        raise RegistryError(
            f"The {what} is {size} bytes as JSON, over the limit of {MAX_DOCUMENT_BYTES}: "
            f"keep large data in files and store their location instead."
        )
    return text


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def hash_artifact(path: Path, *, label: str | None = None) -> str:
    """The SHA-256 (hex) of a file's bytes, or of a directory's tree.

    A directory hashes as SHA-256 over :data:`DIRECTORY_HASH_PREFIX` followed by
    one line per regular file, ``<sha256 of its bytes> <relative path as a JSON
    string>\\n``, sorted by the ``/``-separated relative path (code point order).
    File names, nesting and contents all count; timestamps, permissions and empty
    directories do not (MLflow's artifact stores keep no empty directories).
    Symbolic links and special files inside a directory are refused: the hash
    must describe bytes the registry holds, not what a link points to.

    Raises FileNotFoundError when ``path`` does not exist and RegistryError for a
    link or special file inside a directory (naming the artifact ``label``, by
    default ``path``).
    """
    label = label or str(path)
    mode = path.stat().st_mode  # FileNotFoundError when missing
    if stat.S_ISREG(mode):
        return _file_sha256(path)
    if not stat.S_ISDIR(mode):
        raise RegistryError(f"{label} is neither a regular file nor a directory.")
    lines: list[tuple[str, str]] = []
    for current, dirnames, filenames in os.walk(path, followlinks=False):
        here = Path(current)
        for name in dirnames + filenames:
            entry = here / name
            entry_mode = entry.lstat().st_mode
            relative = entry.relative_to(path).as_posix()
            if stat.S_ISLNK(entry_mode):
                raise RegistryError(
                    f"{relative!r} in artifact {label} is a symbolic link: replace it by the "
                    f"file or directory it points to."
                )
            if stat.S_ISREG(entry_mode):
                lines.append((relative, _file_sha256(entry)))
            elif not stat.S_ISDIR(entry_mode):
                raise RegistryError(f"{relative!r} in artifact {label} is not a regular file.")
    digest = hashlib.sha256(DIRECTORY_HASH_PREFIX)
    for relative, file_hash in sorted(lines):
        digest.update(f"{file_hash} {json.dumps(relative, ensure_ascii=False)}\n".encode())
    return digest.hexdigest()


def check_artifact(artifact: Path) -> Path:
    """``artifact`` resolved, if it is an existing file or directory."""
    artifact = Path(artifact)
    if not artifact.exists():
        raise RegistryError(
            f"Artifact {artifact} does not exist: pass the path of the model "
            f"file or directory to register."
        )
    if not (artifact.is_file() or artifact.is_dir()):
        raise RegistryError(f"Artifact {artifact} is neither a regular file nor a directory.")
    return artifact.resolve()


def _short(sha256: str) -> str:
    return sha256[:12]


class Registry(ABC):
    """Versions, checksums and deployment state of models (see the module docstring).

    Public methods validate their arguments and call the backend's hooks.
    """

    # -- versions -------------------------------------------------------------

    def register(
        self,
        model: str,
        version: str,
        artifact: Path,
        *,
        metadata: dict[str, Any] | None = None,
        model_card: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Store ``artifact`` (a file or a directory) as ``model`` ``version``.

        The backend copies or logs the artifact and records its SHA-256 (see
        :func:`hash_artifact`). Versions are immutable: registering an existing
        one again raises :class:`RegistryError`.

        The model card must name an ``owner`` and a ``risk_tier``
        (:class:`schemas.model_card.ModelCard`): an AI register needs both for
        every version, so a card without them is refused here, for every backend
        and every caller (CLI, retrain hooks, scripts). Versions registered before
        this rule stay readable; ``driftline inventory`` lists them as "owner: missing".
        """
        check_name("Model", model)
        check_name("Version", version)
        problem = card_problem(model_card)
        if problem is not None:
            raise RegistryError(f"Model card of {model} {version} refused: {problem}.")
        source = check_artifact(artifact)
        metadata_json = dump_document("metadata", metadata)
        card_json = dump_document("model card", model_card)
        if self._get(model, version) is not None:
            raise RegistryError(
                f"{model} {version} is already registered and versions are immutable: "
                f"register the new artifact under a new version name."
            )
        return self._register(
            model,
            version,
            source,
            metadata=json.loads(metadata_json),
            model_card=json.loads(card_json),
        )

    def get(self, model: str, version: str) -> ModelVersion | None:
        """The version, or None if it is not registered."""
        return self._get(check_name("Model", model), check_name("Version", version))

    def versions(self, model: str) -> list[ModelVersion]:
        """The model's versions, oldest first (empty for an unknown model)."""
        return self._versions(check_name("Model", model))

    def models(self) -> list[str]:
        """Names of the models with a version or a committed state, sorted."""
        return sorted(self._models())

    def verify(self, model: str, version: str) -> str | None:
        """None if the stored artifact still hashes to the registered SHA-256.

        Otherwise a sentence saying what is wrong: the version is not registered,
        its artifact is missing or unreadable, or its checksum differs (both
        hashes shortened). The controller refuses to promote or restore a version
        for which this is not None.
        """
        found = self.get(model, version)
        if found is None:
            return (
                f"{model} {version} is not registered: register it before promoting or "
                f"restoring it."
            )
        try:
            actual = self._stored_hash(found)
        except FileNotFoundError:
            return (
                f"The artifact of {model} {version} is missing at {found.uri}: restore it "
                f"from a backup or register a new version."
            )
        except (RegistryError, OSError) as exc:
            return f"The artifact of {model} {version} at {found.uri} cannot be verified: {exc}"
        if actual != found.sha256:
            return (
                f"The artifact of {model} {version} at {found.uri} has changed since it was "
                f"registered: checksum mismatch, registered {_short(found.sha256)}..., now "
                f"{_short(actual)}...; do not deploy it, restore the original or register "
                f"a new version."
            )
        return None

    # -- deployment state -----------------------------------------------------

    def load(self, model: str) -> tuple[DeploymentState, dict[str, Any]]:
        """The model's deployment state and the controller's journal.

        A model never committed gives ``(DeploymentState(), {})``.
        """
        return self._load(check_name("Model", model))

    def commit(self, model: str, state: DeploymentState, journal: dict[str, Any]) -> None:
        """Store ``state`` and ``journal`` together (how atomically: see the backend).

        Every version the state names must be registered; the journal must be a
        JSON object of at most :data:`MAX_DOCUMENT_BYTES`.
        """
        check_name("Model", model)
        if not isinstance(state, DeploymentState):
            raise RegistryError(f"The state must be a DeploymentState, not {type(state).__name__}.")
        journal_json = dump_document("journal", journal)
        for role in ("champion", "canary", "last_known_good", "shadow", "standby"):
            version = getattr(state, role)
            if version is not None and self.get(model, check_name("Version", version)) is None:
                raise RegistryError(
                    f"The state names {model} {version} as {role}, but that version is not "
                    f"registered: register it first."
                )
        self._commit(model, state, journal_json)

    # -- backend hooks (arguments already validated) --------------------------

    @abstractmethod
    def _register(
        self,
        model: str,
        version: str,
        artifact: Path,
        *,
        metadata: dict[str, Any],
        model_card: dict[str, Any],
    ) -> ModelVersion:
        """Store a new version (``artifact`` exists and is resolved)."""

    @abstractmethod
    def _get(self, model: str, version: str) -> ModelVersion | None: ...

    @abstractmethod
    def _versions(self, model: str) -> list[ModelVersion]: ...

    @abstractmethod
    def _models(self) -> list[str]: ...

    @abstractmethod
    def _stored_hash(self, found: ModelVersion) -> str:
        """The SHA-256 of the artifact as stored now (FileNotFoundError when it is gone)."""

    @abstractmethod
    def _load(self, model: str) -> tuple[DeploymentState, dict[str, Any]]: ...

    @abstractmethod
    def _commit(self, model: str, state: DeploymentState, journal_json: str) -> None:
        """Store the state and the journal (already checked, as compact JSON text)."""
