"""Commands to the deployment controller and the deployment events it writes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CommandType = Literal["retrain", "rollback", "promote", "set_canary_weight", "hold"]


class Command(BaseModel):
    """A decision for one model, signed by its issuer."""

    model_config = ConfigDict(extra="forbid")

    command_id: str = Field(description="deterministic from the decision's inputs")
    type: CommandType
    model: str
    from_version: str | None = None
    to_version: str | None = None
    canary_weight: float | None = None
    reason: str
    evidence: list[dict[str, Any]] = Field(default_factory=list)
    issued_by: str = "policy"
    issued_at: datetime
    signature: str = ""


class DeploymentState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    champion: str | None = None
    canary: str | None = None
    canary_weight: float = 0.0
    last_known_good: str | None = None


class DeploymentEvent(BaseModel):
    """What the controller did with a command; hash-chained for audit."""

    model_config = ConfigDict(extra="forbid")

    model: str
    command_id: str
    action: str
    status: Literal["applied", "rejected", "pending_approval"]
    reason: str
    state: DeploymentState
    at: datetime
    prev_hash: str
    hash: str
