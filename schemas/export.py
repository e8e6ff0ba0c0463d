"""JSON Schema of every public model, so producers in any language can validate; and the
Arrow schema of each input topic with an Arrow form (``schemas.arrow``)."""

from __future__ import annotations

from datetime import datetime
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pyarrow as pa
from pydantic import BaseModel

from schemas.arrow import CONTENT_TYPE
from schemas.commands import Command, DeploymentEvent
from schemas.evaluation import EvaluationFile
from schemas.events import Batch, FeatureEvent, LabelEvent, PredictionEvent, TrainingRecord
from schemas.model_card import ModelCard
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
    "ModelCard": ModelCard,
    "EvaluationFile": EvaluationFile,
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


# -- Arrow schemas of the input topics (the Arrow IPC form, schemas.arrow) ---------

#: The topics with an Arrow form, and the model each message's rows are validated by.
ARROW_TOPICS: dict[str, type[BaseModel]] = {
    "predictions": PredictionEvent,
    "features": FeatureEvent,
    "labels": LabelEvent,
}
#: Fields whose children are the producer's own names (struct columns): one per feature,
#: per segment attribute. Empty structs in the ``.arrow-schema`` files.
STRUCT_FIELDS = ("features", "segment")
#: Sample children shown in the readable ``.arrow-schema.txt`` only.
SAMPLE_CHILDREN: dict[str, list[pa.Field]] = {
    "features": [
        pa.field("amount", pa.float64()),
        pa.field("txn_count_1h", pa.int32()),
        pa.field("merchant_category", pa.dictionary(pa.int32(), pa.string())),
        pa.field("country", pa.string()),
        pa.field("is_new_device", pa.bool_()),
    ],
    "segment": [pa.field("country", pa.string())],
}


def arrow_type(annotation: Any) -> tuple[pa.DataType, bool]:
    """The Arrow type of a pydantic field's annotation, and whether it is nullable.

    A choice of JSON types (``prediction``, ``label``: number, string or boolean)
    becomes float64, the common case; a string or boolean column is read as well.
    A dict becomes a map of string to its values' type (``probabilities``);
    ``arrow_schema`` makes the ``STRUCT_FIELDS`` structs instead.

    >>> arrow_type(PredictionEvent.model_fields["score"].annotation)
    (DataType(double), True)
    """
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return arrow_type(args[0])
    if origin in (Union, UnionType):
        members = [a for a in args if a is not NoneType]
        nullable = len(members) < len(args)
        kinds = [arrow_type(a)[0] for a in members]
        if len(set(kinds)) == 1:
            return kinds[0], nullable
        return pa.float64(), nullable
    if origin is Literal:
        return pa.string(), False
    if origin is dict:
        return pa.map_(pa.string(), arrow_type(args[1])[0]), False
    simple = {
        datetime: pa.timestamp("ms", tz="UTC"),
        bool: pa.bool_(),
        float: pa.float64(),
        int: pa.int64(),
        str: pa.string(),
    }
    if annotation in simple:
        return simple[annotation], False
    raise TypeError(f"no Arrow type for {annotation!r}")


def arrow_schema(model: type[BaseModel], *, samples: bool = False) -> pa.Schema:
    """The Arrow schema of a message's rows of ``model``: one column per field, by its
    JSON name; required fields non-nullable. The struct fields have no children, or
    with ``samples`` the sample ones of ``SAMPLE_CHILDREN``."""
    fields = []
    for name, info in model.model_fields.items():
        kind, nullable = arrow_type(info.annotation)
        if name in STRUCT_FIELDS:
            kind = pa.struct(SAMPLE_CHILDREN[name] if samples else [])
        fields.append(
            pa.field(info.alias or name, kind, nullable=nullable or not info.is_required())
        )
    return pa.schema(fields)


def arrow_schemas() -> dict[str, pa.Schema]:
    """Topic -> Arrow schema (``arrow_schema``) of its Arrow messages.

    >>> arrow_schemas()["labels"].names
    ['request_id', 'model', 'ts', 'label']
    """
    return {topic: arrow_schema(model) for topic, model in ARROW_TOPICS.items()}


def arrow_schema_text(topic: str) -> str:
    """The readable ``<topic>.arrow-schema.txt``: what the columns mean, then the schema
    (``str(schema)``) with sample children in the struct columns."""
    model = ARROW_TOPICS[topic]
    structs = [name for name in STRUCT_FIELDS if name in model.model_fields]
    lines = [
        f"# Arrow schema of `{topic}` messages: an Arrow IPC stream (one or more record",
        f"# batches), Kafka header content-type: {CONTENT_TYPE}.",
        f"# Rows are {model.__name__}s, validated row by row as the JSON form; columns are",
        "# the events' fields by their JSON names, in any order; extra columns are ignored.",
        "# A nullable column may be left out; a null is an absent value.",
        "# ts: a timestamp (any unit; naive = UTC) or epoch seconds (any int or float type).",
    ]
    choices = [
        name
        for name, info in model.model_fields.items()
        if get_origin(info.annotation) in (Union, UnionType)
        and len({arrow_type(a)[0] for a in get_args(info.annotation) if a is not NoneType}) > 1
    ]
    if choices:
        lines.append(
            f"# {', '.join(choices)}: a number (any int or float type), a string or a "
            "boolean column; float64 below."
        )
    if "features" in structs:
        lines += [
            "# features: a struct whose children are the features, named as in JSON: numeric",
            "#   of any int/float type, categorical as string or dictionary<string>, boolean.",
        ]
    if "segment" in structs:
        lines.append("# segment: a struct whose children are the segment's attributes (strings).")
    if "probabilities" in model.model_fields:
        lines.append(
            "# probabilities: a map<string, double> (or a struct of one double per class)."
        )
    if structs:
        what = " and ".join(structs) + (
            " as empty structs" if len(structs) > 1 else " as an empty struct"
        )
        lines += [
            "# The struct children below are samples; the serialised schema",
            f"# ({topic}.arrow-schema) has {what}: the children are yours.",
        ]
    return "\n".join([*lines, "", str(arrow_schema(model, samples=True)), ""])
