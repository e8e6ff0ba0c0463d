"""JSON Schema of every public model, so producers in any language can validate."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from schemas.commands import Command, DeploymentEvent
from schemas.events import Batch, FeatureEvent, LabelEvent, PredictionEvent, TrainingRecord
from schemas.policy import Policy
from schemas.reference import ReferenceProfile
from schemas.reports import (
    DeadLetter,
    DriftReport,
    KpiReport,
    PoisoningReport,
    QuarantinedRecord,
)

PUBLIC: dict[str, type[BaseModel]] = {
    "PredictionEvent": PredictionEvent,
    "PredictionBatch": Batch[PredictionEvent],
    "FeatureEvent": FeatureEvent,
    "FeatureBatch": Batch[FeatureEvent],
    "LabelEvent": LabelEvent,
    "LabelBatch": Batch[LabelEvent],
    "TrainingRecord": TrainingRecord,
    "TrainingBatch": Batch[TrainingRecord],
    "DriftReport": DriftReport,
    "KpiReport": KpiReport,
    "Command": Command,
    "DeploymentEvent": DeploymentEvent,
    "PoisoningReport": PoisoningReport,
    "QuarantinedRecord": QuarantinedRecord,
    "DeadLetter": DeadLetter,
    "Policy": Policy,
    "ReferenceProfile": ReferenceProfile,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """Name -> JSON Schema (draft 2020-12) of each public model.

    >>> sorted(json_schemas()["PredictionEvent"]["required"])
    ['model', 'model_version', 'prediction', 'request_id', 'ts']
    """
    out = {}
    for name, model in PUBLIC.items():
        schema = model.model_json_schema(mode="validation")
        schema["title"] = name
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        out[name] = schema
    return out
