"""`driftline reference build`: a model version's reference profile from training data.

Reads CSV, JSON lines or Parquet, bins every feature the way the drift monitor
does (same policy), and publishes a ReferenceProfile to the compacted
``references`` topic under ``model@version``. The drift agent then compares
that version's windows with it instead of a warm-up reference.

Columns: JSON-lines records may nest features under ``features`` (as
TrainingRecord and PredictionEvent do) or be flat. The model's outputs, when
present, give prediction drift: ``score`` (or ``--score-column``) and
``prediction`` (or ``--prediction-column``). The label, identifier, time and
other event columns are left out by the rules of ``agents.operator.reference_columns``,
and ``profile_file`` says which columns it profiled and which it left out.

Booleans: JSON and Parquet booleans are booleans; in a CSV file, a column whose
values are all ``true`` or ``false`` in any case (``True``, ``FALSE``; blanks
are missing) is boolean too. The profile keeps them as the categories ``true``
and ``false``, as the drift agent counts the booleans of events.

With the policy's ``multivariate`` on, the profile also carries the
multivariate signal's reference, from the same code as the stream's warm-up:
a PCA fitted on the file's even rows, its baseline error on the odd rows.

With score and label columns and a binary classification KPI policy, the
profile carries the score's isotonic calibration on the labels
(``streams.kpi.estimate.fit_calibration``, the label mapped to 0/1 by the
policy's ``positive_label``): what the KPI agent estimates a window's
performance from before its labels come. Rows without a score in [0, 1] or a
label are left out of it; a file with one class only gets none.

With label and prediction columns (at least 200 rows with both), the profile
carries the concept-drift detector calibrated on the rows' error stream to the
policy's ``concept_false_alarm_rate`` (``streams.kpi.concept_calibration``):
about a second for ADWIN, up to a few seconds for KSWIN.

With ``kpi.reference_bands`` in the policy and label and prediction columns (and
the score, for the score metrics), the profile carries each KPI's spread over
consecutive windows of the labeled rows (``streams.kpi.bands``): the bands the KPI
agent judges live windows against.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from agents.config import Settings
from agents.dev import simulate
from agents.inputs.pii import Pseudonymizer
from agents.operator.reference_columns import ColumnRoles, SplitColumns, describe, split_columns
from schemas.errors import DriftlineError
from schemas.poisoning import TrustedSet
from schemas.policy import DriftPolicy, KpiPolicy
from schemas.reference import (
    BOOLEAN_SPELLINGS,
    ConceptCalibration,
    MultivariateProfile,
    PerformanceBands,
    ReferenceFeatureProfile,
    ReferenceProfile,
    ScoreCalibration,
)
from streams.drift.reference import profile_features, profile_multivariate
from streams.drift.state import PREDICTION, SCORE
from streams.kpi import bands as kpi_bands
from streams.kpi import concept_calibration as concept_cal
from streams.kpi import estimate as cbpe
from streams.kpi.classification import ClassificationKpi
from streams.kpi.labels import to_binary
from streams.poisoning.trusted import sample_trusted

logger = logging.getLogger(__name__)

#: How a CSV file may spell a boolean (a column of only these, and blanks, is boolean).
CSV_BOOLEANS = {text: canonical == "true" for text, canonical in BOOLEAN_SPELLINGS.items()}


class ReferenceDataError(DriftlineError):
    """The reference data file cannot be read or holds no usable feature."""


def _cell(text: str) -> float | str | None:
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def read_csv(path: Path) -> list[dict[str, Any]]:
    """A CSV file's rows: numbers as floats, blanks as None, boolean columns as booleans."""
    texts: list[dict[str, str]] = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        names = reader.fieldnames or []
        for row in reader:
            if None in row or None in row.values():  # more fields than the header, or fewer
                fields = sum(v is not None for v in row.values()) - (None in row)
                fields += len(row.get(None) or [])  # type: ignore[call-overload]
                raise ReferenceDataError(
                    f"{path}, line {reader.line_num}: {fields} fields where the header has "
                    f"{len(names)}"
                )
            texts.append(row)
    boolean = [
        name
        for name in names
        if any(row[name] for row in texts)
        and {row[name] for row in texts} - {""} <= CSV_BOOLEANS.keys()
    ]
    records = [{k: _cell(v) for k, v in row.items()} for row in texts]
    for name in boolean:
        for record, row in zip(records, texts, strict=True):
            record[name] = CSV_BOOLEANS.get(row[name])
    return records


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of a .csv, .jsonl/.ndjson/.json (one object per line) or .parquet file."""
    if not path.is_file():
        raise ReferenceDataError(f"cannot read reference data {path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return read_csv(path)
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
            import pyarrow.parquet as pq  # imported here: only Parquet data needs it

            return list(pq.read_table(path).to_pylist())
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReferenceDataError(f"cannot read reference data {path}: {exc}") from exc
    raise ReferenceDataError(
        f"{path}: unknown format {suffix!r}; use .csv, .jsonl (JSON lines) or .parquet"
    )


def columns_of(
    records: list[dict[str, Any]], roles: ColumnRoles | None = None
) -> dict[str, Sequence[Any]]:
    """The columns to profile: the features, ``@score`` and ``@prediction``."""
    return split_columns(records, roles or ColumnRoles()).columns


@dataclass(frozen=True)
class Built:
    """A profile and what became of each column of the data."""

    profile: ReferenceProfile
    split: SplitColumns
    roles: ColumnRoles
    #: with kpi.reference_bands: why the profile has no bands (empty when it has them)
    bands_reason: str = ""

    def describe(self) -> str:
        """``profiled: a, b; model outputs: ...; left out: request_id (id), ...``"""
        return describe(self.split, self.roles)


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
    kpi: KpiPolicy | None = None,
) -> ReferenceProfile:
    """The profile of ``path``'s records (see ``profile_file``)."""
    roles = ColumnRoles(label=label_column, score=score_column)
    return profile_file(
        path,
        model=model,
        version=version,
        policy=policy,
        roles=roles,
        trusted_rows=trusted_rows,
        pii=pii,
        kpi=kpi,
    ).profile


def profile_file(
    path: Path,
    *,
    model: str,
    version: str,
    policy: DriftPolicy,
    roles: ColumnRoles,
    trusted_rows: int = 5000,
    pii: Pseudonymizer | None = None,
    kpi: KpiPolicy | None = None,
) -> Built:
    """The profile of ``path``'s feature columns (``agents.operator.reference_columns`` says which
    columns are features); with labels in ``roles.label``, also the trusted set the
    poisoning guard screens training records against (a stratified sample of at most
    ``trusted_rows`` labeled records; 0: none); with scores and labels too, the score's
    calibration for ``kpi`` (the KPI policy: its task and positive label; default
    ``KpiPolicy()``)."""
    records = read_records(path)
    if not records:
        raise ReferenceDataError(f"{path}: no records")
    if pii:  # the profile and the trusted set hold the same tokens as the live events
        pii.apply_records(records)
    split = split_columns(records, roles)
    columns = split.columns
    features = profile_features(
        columns, bins=policy.bins, fine_bins=policy.fine_bins, top_k=policy.top_k
    )
    if not [f for f in features if f not in (SCORE, PREDICTION)]:
        left = ", ".join(f"{name} ({role})" for name, role in split.left_out.items())
        raise ReferenceDataError(f"{path}: no feature column with values (left out: {left})")
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
    bands, bands_reason = reference_bands(records, roles, kpi or KpiPolicy())
    profile = ReferenceProfile(
        model=model,
        model_version=version,
        created_at=datetime.now(UTC),
        source=path.name,
        n=len(records),
        features={k: ReferenceFeatureProfile.model_validate(v) for k, v in features.items()},
        multivariate=MultivariateProfile.model_validate(pca) if pca is not None else None,
        trusted=trusted_set(
            records,
            columns,
            model=model,
            version=version,
            source=path.name,
            label_column=roles.label,
            max_rows=trusted_rows,
        ),
        calibration=calibration(records, roles, kpi or KpiPolicy()),
        concept=concept_calibration(records, roles, kpi or KpiPolicy()),
        bands=bands,
    )
    return Built(profile=profile, split=split, roles=roles, bands_reason=bands_reason)


def reference_bands(
    records: list[dict[str, Any]], roles: ColumnRoles, kpi: KpiPolicy
) -> tuple[PerformanceBands | None, str]:
    """Each KPI's spread over consecutive windows of the records with a label and a
    prediction, in file order (``streams.kpi.bands``), or None and why: the policy asks
    for none (``kpi.reference_bands``), or too few such records."""
    if kpi.reference_bands is None:
        return None, ""
    rows = [
        r for r in records if r.get(roles.label) is not None and r.get(roles.prediction) is not None
    ]
    started = time.perf_counter()
    bands, why = kpi_bands.fit(
        kpi,
        [r.get(roles.prediction) for r in rows],
        [r.get(roles.label) for r in rows],
        [r.get(roles.score) for r in rows],
    )
    if bands is not None:
        logger.info(
            "KPI bands from %d reference windows of %d labels in %.0f ms: %s",
            bands.windows,
            bands.window_events,
            (time.perf_counter() - started) * 1000,
            ", ".join(bands.metrics),
        )
    return bands, why


def calibration(
    records: list[dict[str, Any]], roles: ColumnRoles, kpi: KpiPolicy
) -> ScoreCalibration | None:
    """The score's isotonic calibration on the labels (binary classification), or None:
    no score or label column, another task, or one class only."""
    if kpi.task != "classification":
        return None
    scores = [r.get(roles.score) for r in records]
    labels = [r.get(roles.label) for r in records]
    s = np.array(
        [v if isinstance(v, int | float) and not isinstance(v, bool) else np.nan for v in scores],
        dtype=np.float64,
    )
    y = to_binary(labels, kpi.positive_label)
    fitted = cbpe.fit_calibration(
        ClassificationKpi(), s, np.where(y >= 0, y, np.nan).astype(np.float64)
    )
    if fitted is None:
        return None
    return ScoreCalibration(positive_label=kpi.positive_label, **fitted)


def concept_calibration(
    records: list[dict[str, Any]], roles: ColumnRoles, kpi: KpiPolicy
) -> ConceptCalibration | None:
    """The concept detector calibrated on the error stream of the records with a label and
    a prediction, in file order (``streams.kpi.concept_calibration``), or None: the policy
    asks for none, too few such records (``MIN_ERRORS``), or ddm on a regressor's
    errors."""
    rate = kpi.concept_false_alarm_rate
    pairs = [
        (r.get(roles.prediction), r.get(roles.label))
        for r in records
        if r.get(roles.label) is not None and r.get(roles.prediction) is not None
    ]
    if rate is None or len(pairs) < concept_cal.MIN_ERRORS:
        return None
    started = time.perf_counter()
    errors = concept_cal.reference_errors(kpi, [p for p, _ in pairs], [y for _, y in pairs])
    found = concept_cal.calibrate(
        errors, kind=kpi.concept_detector, params=kpi.concept_params, false_alarm_rate=rate
    )
    if found is not None:
        logger.info(
            "concept detector %s calibrated on %d reference errors in %.0f ms: %s, scale %s, "
            "false alarms in %.3g of windows (uncalibrated: %.3g)",
            found.detector,
            found.errors,
            (time.perf_counter() - started) * 1000,
            found.params,
            found.scale,
            found.false_alarm_rate,
            found.uncalibrated_false_alarm_rate,
        )
    return concept_cal.stored_form(found)


def trusted_set(
    records: list[dict[str, Any]],
    columns: dict[str, Sequence[Any]],
    *,
    model: str,
    version: str,
    source: str,
    label_column: str,
    max_rows: int,
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
    return sample_trusted(
        model, features, labels, max_rows=max_rows, source=source, model_version=version
    )


def _plain(value: Any) -> Any:
    """NaN (a missing number in a column) back to None, as the events carry it."""
    return None if isinstance(value, float) and value != value else value


def publish(profile: ReferenceProfile, settings: Settings) -> None:
    producer = simulate.make_producer(settings.bootstrap)
    key = f"{profile.model}@{profile.model_version}"
    simulate.publish(
        producer, settings.topic("references"), key, [profile.model_dump_json().encode()]
    )
