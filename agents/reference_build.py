"""`driftline reference build`: a model version's reference profile from training data.

Reads CSV, JSON lines or Parquet, bins every feature the way the drift monitor
does (same policy), and publishes a ReferenceProfile to the compacted
``references`` topic under ``model@version``. The drift agent then compares
that version's windows with it instead of a warm-up reference.

Columns: JSON-lines records may nest features under ``features`` (as
TrainingRecord and PredictionEvent do) or be flat. The model's outputs, when
present, give prediction drift: ``score`` (or ``--score-column``) and
``prediction``. Identifier and time columns are left out (``EXCLUDED``).

With the policy's ``multivariate`` on, the profile also carries the
multivariate signal's reference, from the same code as the stream's warm-up:
a PCA fitted on the file's even rows, its baseline error on the odd rows.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from agents import simulate
from agents.config import Settings
from agents.pii import Pseudonymizer
from schemas.errors import DriftlineError
from schemas.poisoning import TrustedSet
from schemas.policy import DriftPolicy
from schemas.reference import MultivariateProfile, ReferenceFeatureProfile, ReferenceProfile
from streams.batch import columns_from_rows
from streams.drift.monitor import PREDICTION, SCORE
from streams.drift.reference import profile_features, profile_multivariate
from streams.poisoning.trusted import sample_trusted

logger = logging.getLogger(__name__)

EXCLUDED = frozenset(
    {
        "request_id",
        "record_id",
        "ts",
        "label",
        "model",
        "model_version",
        "source",
        "variant",
        "latency_ms",
        "error",
        "segment",
        "probabilities",
    }
)


class ReferenceDataError(DriftlineError):
    """The reference data file cannot be read or holds no usable feature."""


def _cell(text: str) -> float | str | None:
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of a .csv, .jsonl/.ndjson/.json (one object per line) or .parquet file."""
    if not path.is_file():
        raise ReferenceDataError(f"cannot read reference data {path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as handle:
                return [{k: _cell(v) for k, v in row.items()} for row in csv.DictReader(handle)]
        if suffix in {".jsonl", ".ndjson", ".json"}:
            records = []
            with path.open("rb") as handle:
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        record = orjson.loads(line)
                    except orjson.JSONDecodeError as exc:
                        raise ReferenceDataError(
                            f"{path}, line {number}: not valid JSON ({exc})"
                        ) from exc
                    if not isinstance(record, dict):
                        raise ReferenceDataError(f"{path}, line {number}: not a JSON object")
                    records.append(record)
            return records
        if suffix == ".parquet":
            try:
                import pyarrow.parquet as pq  # optional: pip install 'driftline[parquet]'
            except ImportError as exc:
                raise ReferenceDataError(
                    "reading Parquet needs pyarrow: pip install 'driftline[parquet]'"
                ) from exc
            return list(pq.read_table(path).to_pylist())
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReferenceDataError(f"cannot read reference data {path}: {exc}") from exc
    raise ReferenceDataError(
        f"{path}: unknown format {suffix!r}; use .csv, .jsonl (JSON lines) or .parquet"
    )


def columns_of(
    records: list[dict[str, Any]],
    *,
    score_column: str = "score",
    prediction_column: str = "prediction",
) -> dict[str, Sequence[Any]]:
    rows = []
    for record in records:
        nested = record.get("features")
        row = (
            dict(nested)
            if isinstance(nested, dict)
            else {k: v for k, v in record.items() if k not in EXCLUDED and k != "features"}
        )
        row.pop(score_column, None)
        row.pop(prediction_column, None)
        if record.get(score_column) is not None:
            row[SCORE] = record[score_column]
        if record.get(prediction_column) is not None:
            row[PREDICTION] = record[prediction_column]
        rows.append(row)
    return columns_from_rows(rows)


def build(
    path: Path,
    *,
    model: str,
    version: str,
    policy: DriftPolicy,
    score_column: str = "score",
    label_column: str = "label",
    trusted_rows: int = 5000,
    pii: Pseudonymizer | None = None,
) -> ReferenceProfile:
    """The profile of ``path``'s records; with a ``label_column``, also the trusted
    set the poisoning guard screens training records against (a stratified sample
    of at most ``trusted_rows`` labeled records; 0: none)."""
    records = read_records(path)
    if not records:
        raise ReferenceDataError(f"{path}: no records")
    if pii:  # the profile and the trusted set hold the same tokens as the live events
        pii.apply_records(records)
    columns = columns_of(records, score_column=score_column)
    features = profile_features(
        columns, bins=policy.bins, fine_bins=policy.fine_bins, top_k=policy.top_k
    )
    if not [f for f in features if f not in (SCORE, PREDICTION)]:
        raise ReferenceDataError(f"{path}: no feature column with values")
    pca = (
        profile_multivariate(
            columns,
            # (features the policy ignores are left out, as in the stream's warm-up)
            exclude=frozenset({SCORE, PREDICTION}) | policy.ignored(),
            max_features=policy.multivariate_max_features,
            variance=policy.multivariate_variance,
        )
        if policy.multivariate
        else None
    )
    return ReferenceProfile(
        model=model,
        model_version=version,
        created_at=datetime.now(UTC),
        source=path.name,
        n=len(records),
        features={k: ReferenceFeatureProfile.model_validate(v) for k, v in features.items()},
        multivariate=MultivariateProfile.model_validate(pca) if pca is not None else None,
        trusted=trusted_set(records, columns, model=model, version=version, source=path.name,
                            label_column=label_column, max_rows=trusted_rows),
    )


def trusted_set(
    records: list[dict[str, Any]], columns: dict[str, Sequence[Any]], *, model: str,
    version: str, source: str, label_column: str, max_rows: int,
) -> TrustedSet | None:
    """The labeled records' features (not the model's score or prediction) and labels."""
    labeled = [i for i, r in enumerate(records) if r.get(label_column) is not None]
    if not labeled or max_rows <= 0:
        return None
    features = {}
    for name, values in columns.items():
        if name in (SCORE, PREDICTION):
            continue
        column = values.tolist() if hasattr(values, "tolist") else list(values)
        features[name] = [_plain(column[i]) for i in labeled]
    labels = [records[i][label_column] for i in labeled]
    return sample_trusted(model, features, labels, max_rows=max_rows, source=source,
                          model_version=version)


def _plain(value: Any) -> Any:
    """NaN (a missing number in a column) back to None, as the events carry it."""
    return None if isinstance(value, float) and value != value else value


def publish(profile: ReferenceProfile, settings: Settings) -> None:
    producer = simulate.make_producer(settings.bootstrap)
    key = f"{profile.model}@{profile.model_version}"
    simulate.publish(
        producer, settings.topic("references"), key, [profile.model_dump_json().encode()]
    )
