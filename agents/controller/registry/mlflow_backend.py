"""The model registry on MLflow's Model Registry (``mlflow-skinny`` + a SQL store, or a server).

Mapping:

* a driftline model is an MLflow *registered model* (tagged ``driftline.managed``);
* a driftline version is an MLflow *model version* (MLflow numbers them 1, 2,
  3 ...); driftline's version name is the model-version tag ``driftline.version``,
  beside ``driftline.sha256`` and the JSON tags ``driftline.metadata`` and
  ``driftline.model_card`` (the whole card, what driftline reads back), and the
  card's ``owner`` and ``risk_tier`` again as the plain tags ``driftline.owner``
  and ``driftline.risk_tier``, so the MLflow UI and search can filter on them
  (``tags.`driftline.risk_tier` = 'high'``). The artifact is logged to a run of the experiment
  ``driftline-registry`` under ``artifact/`` and the version's ``source`` points
  at it; the run's artifacts live under the experiment's artifact location
  (by default ``mlflow-artifacts/`` beside a SQLite database, the server's
  default root otherwise; ``artifact_location`` chooses another);
* the deployment state is four *aliases*, ``champion``, ``canary``, ``shadow``
  and ``standby`` (each removed when the state has none; serving code loads
  ``models:/<model>@shadow`` beside the champion), and the registered-model tags
  ``driftline.canary_weight`` and ``driftline.last_known_good``;
* the controller's journal is stored in registered-model tags too, see below.

Tag sizes: MLflow validates model-version tag values up to 100,000 characters
(``MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH`` in ``mlflow/utils/validation.py``) and
stores them in a TEXT column, so metadata and model card (at most 64 KiB of
JSON each) fit in one tag. Registered-model tags pass the same validation but
their SQL column is ``VARCHAR(5000)`` (``SqlRegisteredModelTag.value`` in
``mlflow/store/model_registry/dbmodels/models.py``): SQLite ignores that, MySQL
and PostgreSQL do not. The journal (up to 64 KiB) is therefore split into parts
of :data:`JOURNAL_PART_CHARS` characters.

No transactions: MLflow applies each alias or tag write on its own. A commit
writes the aliases, then canary weight and last known good, then the journal,
last. The journal itself switches atomically: its parts are written into the
slot (``a`` or ``b``) the header tag ``driftline.journal`` does *not* point at,
and one write of the header (slot, part count, SHA-256) makes them current. A
crash in the middle of a commit therefore leaves the old journal with some of
the new aliases/tags: the controller, seeing from the journal that the command
was not applied, applies it again and derives the same alias set, which is
idempotent. Only one controller should commit a given model.

Versions are immutable as far as driftline goes: ``register`` refuses an
existing ``driftline.version``. MLflow cannot enforce that uniqueness, so two
processes registering the same name at the same instant could both succeed;
:meth:`MlflowRegistry.get` then answers the first (lowest MLflow number).

MLflow is imported only when a registry is opened (importing it takes about a
second), so ``import agents.controller.registry`` stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from agents.controller.registry.base import ModelVersion, Registry, RegistryError, hash_artifact
from schemas.commands import DeploymentState

EXPERIMENT = "driftline-registry"
ALIASES = ("champion", "canary", "shadow", "standby")
TAG_MANAGED = "driftline.managed"
TAG_VERSION = "driftline.version"
TAG_SHA256 = "driftline.sha256"
TAG_METADATA = "driftline.metadata"
TAG_MODEL_CARD = "driftline.model_card"
TAG_OWNER = "driftline.owner"
TAG_RISK_TIER = "driftline.risk_tier"
TAG_CANARY_WEIGHT = "driftline.canary_weight"
TAG_LAST_KNOWN_GOOD = "driftline.last_known_good"
TAG_JOURNAL = "driftline.journal"
#: Registered-model tag values are a VARCHAR(5000) column in MLflow's SQL store.
JOURNAL_PART_CHARS = 5000
_PAGE = 1000


def _part_tag(slot: str, index: int) -> str:
    return f"{TAG_JOURNAL}.{slot}.{index}"


def default_artifact_location(tracking_uri: str) -> str | None:
    """``mlflow-artifacts/`` beside a SQLite database (as a file URI); None otherwise.

    None lets an MLflow server choose (its ``--default-artifact-root``).
    """
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri[len("sqlite:///") :]).expanduser().resolve()
    return (database.parent / "mlflow-artifacts").as_uri()


def _local_path(uri: str) -> Path | None:
    """The local path of a ``file:`` URI or plain path; None for remote URIs."""
    parsed = urlparse(uri)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        return Path(url2pathname(parsed.path))
    if parsed.scheme == "":
        return Path(uri)
    return None


class MlflowRegistry(Registry):
    """A registry on MLflow (see the module docstring for the mapping and its limits).

    ``tracking_uri`` is e.g. ``sqlite:///var/lib/driftline/mlflow.db`` or
    ``http://mlflow:5000``; ``registry_uri`` defaults to it.
    """

    def __init__(
        self,
        tracking_uri: str,
        *,
        registry_uri: str | None = None,
        artifact_location: str | None = None,
        experiment: str = EXPERIMENT,
    ) -> None:
        try:
            from mlflow import MlflowClient
            from mlflow.exceptions import MlflowException
        except ImportError as exc:
            raise RegistryError(
                "The MLflow registry needs MLflow: pip install 'driftline[mlflow]'."
            ) from exc
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self.artifact_location = (
            artifact_location
            if artifact_location is not None
            else default_artifact_location(tracking_uri)
        )
        self.experiment = experiment
        self._mlflow_exception = MlflowException
        self._experiment_id: str | None = None
        try:
            self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=self.registry_uri)
        except MlflowException as exc:
            raise RegistryError(
                f"Cannot open the MLflow registry at {tracking_uri}: {exc}"
            ) from exc

    def __repr__(self) -> str:
        return f"MlflowRegistry({self.tracking_uri!r})"

    # -- MLflow helpers -------------------------------------------------------

    def _is(self, exc: BaseException, code: str) -> bool:
        return isinstance(exc, self._mlflow_exception) and exc.error_code == code

    def _artifact_experiment(self) -> str:
        """The id of the experiment whose runs hold the artifacts, created on first use."""
        if self._experiment_id is not None:
            return self._experiment_id
        found = self.client.get_experiment_by_name(self.experiment)
        if found is None:
            try:
                self._experiment_id = self.client.create_experiment(
                    self.experiment, artifact_location=self.artifact_location
                )
                return self._experiment_id
            except self._mlflow_exception as exc:
                if not self._is(exc, "RESOURCE_ALREADY_EXISTS"):  # else: created meanwhile
                    raise
            found = self.client.get_experiment_by_name(self.experiment)
        if found.lifecycle_stage != "active":
            raise RegistryError(
                f"The MLflow experiment {self.experiment!r} is deleted: restore it "
                f"(mlflow experiments restore) or choose another experiment name."
            )
        self._experiment_id = str(found.experiment_id)
        return self._experiment_id

    def _registered_model(self, model: str) -> Any | None:
        try:
            return self.client.get_registered_model(model)
        except self._mlflow_exception as exc:
            if self._is(exc, "RESOURCE_DOES_NOT_EXIST"):
                return None
            raise

    def _ensure_registered_model(self, model: str) -> Any:
        found = self._registered_model(model)
        if found is None:
            try:
                self.client.create_registered_model(
                    model,
                    tags={TAG_MANAGED: "true"},
                    description="Managed by driftline's deployment controller.",
                )
            except self._mlflow_exception as exc:
                if not self._is(exc, "RESOURCE_ALREADY_EXISTS"):
                    raise
            found = self.client.get_registered_model(model)
        elif found.tags.get(TAG_MANAGED) != "true":
            self.client.set_registered_model_tag(model, TAG_MANAGED, "true")
        return found

    @staticmethod
    def _pages(search: Callable[..., Any], filter_string: str) -> Iterator[Any]:
        token = None
        while True:
            page = search(filter_string=filter_string, max_results=_PAGE, page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    def _mlflow_version(self, model: str, version: str) -> Any | None:
        """The MLflow model version carrying ``driftline.version = version`` (first one)."""
        # Names are validated ([A-Za-z0-9._-]), so quoting them cannot break the filter.
        hits = list(
            self._pages(
                self.client.search_model_versions,
                f"name = '{model}' and tags.`{TAG_VERSION}` = '{version}'",
            )
        )
        return min(hits, key=lambda mv: int(mv.version)) if hits else None

    @staticmethod
    def _to_version(model: str, mv: Any) -> ModelVersion:
        tags = mv.tags
        return ModelVersion(
            model=model,
            version=tags[TAG_VERSION],
            sha256=tags[TAG_SHA256],
            uri=mv.source,
            created_at=datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC),
            metadata=json.loads(tags.get(TAG_METADATA, "{}")),
            model_card=json.loads(tags.get(TAG_MODEL_CARD, "{}")),
        )

    def _version_name(self, model: str, number: str | int | None) -> str | None:
        """driftline's name of MLflow version ``number`` (None for None)."""
        if number is None:
            return None
        name = self.client.get_model_version(model, str(number)).tags.get(TAG_VERSION)
        if name is None:
            raise RegistryError(
                f"An alias of {model} points at MLflow version {number}, which driftline did "
                f"not register: set the alias to a driftline version or remove it."
            )
        return name

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
        sha256 = hash_artifact(artifact)  # also refuses links inside a directory
        run = self.client.create_run(
            self._artifact_experiment(),
            run_name=f"{model}-{version}",
            tags={"driftline.model": model, TAG_VERSION: version},
        )
        run_id = run.info.run_id
        try:
            if artifact.is_dir():
                self.client.log_artifacts(run_id, str(artifact), artifact_path="artifact")
                source = f"{run.info.artifact_uri}/artifact"
            else:
                self.client.log_artifact(run_id, str(artifact), artifact_path="artifact")
                source = f"{run.info.artifact_uri}/artifact/{artifact.name}"
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED")
        self._ensure_registered_model(model)
        created = self.client.create_model_version(
            model,
            source,
            run_id=run_id,
            tags={
                TAG_VERSION: version,
                TAG_SHA256: sha256,
                TAG_METADATA: json.dumps(metadata, ensure_ascii=False),
                TAG_MODEL_CARD: json.dumps(model_card, ensure_ascii=False),
                # Checked by Registry.register: both present and text.
                TAG_OWNER: str(model_card["owner"]),
                TAG_RISK_TIER: str(model_card["risk_tier"]),
            },
            description=f"driftline version {version}",
        )
        return self._to_version(model, created)

    def _get(self, model: str, version: str) -> ModelVersion | None:
        found = self._mlflow_version(model, version)
        return None if found is None else self._to_version(model, found)

    def _versions(self, model: str) -> list[ModelVersion]:
        found = [
            mv
            for mv in self._pages(self.client.search_model_versions, f"name = '{model}'")
            if TAG_VERSION in mv.tags
        ]
        # MLflow's numbers are the registration order.
        return [self._to_version(model, mv) for mv in sorted(found, key=lambda mv: int(mv.version))]

    def _models(self) -> list[str]:
        return [
            rm.name
            for rm in self._pages(
                self.client.search_registered_models, f"tags.`{TAG_MANAGED}` = 'true'"
            )
        ]

    def _stored_hash(self, found: ModelVersion) -> str:
        local = _local_path(found.uri)
        if local is not None:
            return hash_artifact(local)
        from mlflow.artifacts import download_artifacts

        with tempfile.TemporaryDirectory(prefix="driftline-verify-") as scratch:
            try:
                path = download_artifacts(
                    artifact_uri=found.uri, dst_path=scratch, tracking_uri=self.tracking_uri
                )
            except self._mlflow_exception as exc:
                raise RegistryError(f"downloading it failed: {exc}") from exc
            return hash_artifact(Path(path))

    # -- deployment state -----------------------------------------------------

    def _load(self, model: str) -> tuple[DeploymentState, dict[str, Any]]:
        found = self._registered_model(model)
        if found is None:
            return DeploymentState(), {}
        tags = found.tags
        try:
            weight = float(tags.get(TAG_CANARY_WEIGHT, 0.0))
        except ValueError as exc:
            raise RegistryError(
                f"Tag {TAG_CANARY_WEIGHT} of {model} is not a number: set it to one, or commit "
                f"a state again."
            ) from exc
        state = DeploymentState(
            champion=self._version_name(model, found.aliases.get("champion")),
            canary=self._version_name(model, found.aliases.get("canary")),
            canary_weight=weight,
            last_known_good=tags.get(TAG_LAST_KNOWN_GOOD),
            shadow=self._version_name(model, found.aliases.get("shadow")),
            standby=self._version_name(model, found.aliases.get("standby")),
        )
        return state, self._read_journal(model, tags)

    def _commit(self, model: str, state: DeploymentState, journal_json: str) -> None:
        current = self._ensure_registered_model(model)
        numbers: dict[str, str | None] = {}
        for alias in ALIASES:
            name = getattr(state, alias)
            mv = None if name is None else self._mlflow_version(model, name)
            numbers[alias] = None if mv is None else str(mv.version)
        for alias, number in numbers.items():
            existing = current.aliases.get(alias)
            if number is None:
                if existing is not None:
                    self.client.delete_registered_model_alias(model, alias)
            elif str(existing) != number:
                self.client.set_registered_model_alias(model, alias, number)
        tags = current.tags
        weight = repr(float(state.canary_weight))
        if tags.get(TAG_CANARY_WEIGHT) != weight:
            self.client.set_registered_model_tag(model, TAG_CANARY_WEIGHT, weight)
        if state.last_known_good is None:
            if TAG_LAST_KNOWN_GOOD in tags:
                self.client.delete_registered_model_tag(model, TAG_LAST_KNOWN_GOOD)
        elif tags.get(TAG_LAST_KNOWN_GOOD) != state.last_known_good:
            self.client.set_registered_model_tag(model, TAG_LAST_KNOWN_GOOD, state.last_known_good)
        self._write_journal(model, tags, journal_json)  # last: it marks the commit done

    # -- the journal in registered-model tags ---------------------------------

    def _write_journal(self, model: str, tags: dict[str, str], text: str) -> None:
        header = self._journal_header(model, tags)
        slot = "b" if header is not None and header["slot"] == "a" else "a"
        parts = [text[i : i + JOURNAL_PART_CHARS] for i in range(0, len(text), JOURNAL_PART_CHARS)]
        for index, part in enumerate(parts):
            self.client.set_registered_model_tag(model, _part_tag(slot, index), part)
        new_header = {
            "slot": slot,
            "parts": len(parts),
            "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        }
        self.client.set_registered_model_tag(model, TAG_JOURNAL, json.dumps(new_header))
        # Parts of an older, longer journal in this slot are unreferenced now.
        stale = len(parts)
        while _part_tag(slot, stale) in tags:
            self.client.delete_registered_model_tag(model, _part_tag(slot, stale))
            stale += 1

    @staticmethod
    def _journal_header(model: str, tags: dict[str, str]) -> dict[str, Any] | None:
        raw = tags.get(TAG_JOURNAL)
        if raw is None:
            return None
        try:
            header = json.loads(raw)
            if header["slot"] in ("a", "b") and isinstance(header["parts"], int):
                return dict(header)
        except (ValueError, KeyError, TypeError):
            pass
        raise RegistryError(
            f"Tag {TAG_JOURNAL} of {model} is damaged ({raw[:80]!r}): delete it to start a "
            f"fresh journal, or restore the registry database."
        )

    def _read_journal(self, model: str, tags: dict[str, str]) -> dict[str, Any]:
        header = self._journal_header(model, tags)
        if header is None:
            return {}
        try:
            text = "".join(tags[_part_tag(header["slot"], i)] for i in range(header["parts"]))
        except KeyError as exc:
            raise RegistryError(
                f"The journal of {model} lacks its part {exc.args[0]}: restore the registry "
                f"database, or delete tag {TAG_JOURNAL} to start a fresh journal."
            ) from exc
        if hashlib.sha256(text.encode("utf-8")).hexdigest() != header.get("sha256"):
            raise RegistryError(
                f"The journal of {model} does not match its checksum: restore the registry "
                f"database, or delete tag {TAG_JOURNAL} to start a fresh journal."
            )
        journal = json.loads(text)
        if not isinstance(journal, dict):
            raise RegistryError(
                f"The journal of {model} is not a JSON object: restore the "
                f"registry database, or delete tag {TAG_JOURNAL}."
            )
        return journal
