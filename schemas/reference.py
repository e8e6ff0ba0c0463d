"""ReferenceProfile: a model version's training-data distribution, on the ``references`` topic."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ReferenceFeatureProfile(BaseModel):
    """One feature's reference distribution, binned as the drift monitor needs it."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["numeric", "categorical"]
    bins: list[float] | list[str] = Field(
        description="numeric: interior bin edges; categorical: the top categories"
    )
    counts: list[int] = Field(description="values per bin; categorical: plus a last 'other'")
    missing: int = Field(ge=0)
    groups: list[int] = Field(default_factory=list, description="numeric: PSI bin of each bin")
    known: list[str] = Field(default_factory=list, description="categorical: every category")
    lo: float = 0.0
    hi: float = 0.0
    std: float = 0.0


class ReferenceProfile(BaseModel):
    """Published by ``driftline reference build``; key ``model@version``, compacted topic."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    model_version: str = Field(min_length=1)
    created_at: datetime
    source: str = Field(description="where the data came from, e.g. the file name")
    n: int = Field(ge=1, description="records in the reference data")
    features: dict[str, ReferenceFeatureProfile] = Field(
        description="by feature name; '@score' and '@prediction' hold the model's outputs"
    )
