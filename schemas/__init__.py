"""Event, report, command and policy models of driftline's public Kafka contract (pydantic v2)."""

from schemas.commands import Command, DeploymentEvent, DeploymentState
from schemas.errors import DriftlineError, SchemaError
from schemas.events import (
    Batch,
    FeatureEvent,
    FeatureValue,
    LabelEvent,
    PredictionEvent,
    TrainingRecord,
    Variant,
)
from schemas.policy import DriftPolicy, Policy, PolicyError, load_policy
from schemas.reports import (
    DeadLetter,
    DriftReport,
    FeatureDrift,
    KpiReport,
    PoisoningReport,
    QuarantinedRecord,
    ReferenceInfo,
    SourceCounts,
)

__all__ = [
    "Batch",
    "Command",
    "DeadLetter",
    "DeploymentEvent",
    "DeploymentState",
    "DriftPolicy",
    "DriftReport",
    "DriftlineError",
    "FeatureDrift",
    "FeatureEvent",
    "FeatureValue",
    "KpiReport",
    "LabelEvent",
    "PoisoningReport",
    "Policy",
    "PolicyError",
    "PredictionEvent",
    "QuarantinedRecord",
    "ReferenceInfo",
    "SchemaError",
    "SourceCounts",
    "TrainingRecord",
    "Variant",
    "load_policy",
]
