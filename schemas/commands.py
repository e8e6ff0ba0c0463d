"""Commands to the deployment controller and the deployment events it writes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

CommandType = Literal[
    "retrain",  # run the retrain hook on the clean training data
    "canary",  # start serving to_version as the canary at canary_weight
    "set_canary_weight",  # move the canary's traffic share
    "promote",  # to_version becomes the champion; the old one is last known good
    "rollback",  # drop a failing canary, or return the champion to the last known good
    "switch",  # blue-green: to_version takes all traffic at once; the champion stays on standby
    "shadow",  # to_version answers the champion's requests unserved; no to_version: stop it
    "hold",  # a decision held back (e.g. retrain during a poisoning campaign), for the record
    "approve",  # an operator approves the command named in ``approves``
]


class Command(BaseModel):
    """A decision for one model, signed by its issuer."""

    model_config = ConfigDict(extra="forbid")

    command_id: str = Field(description="deterministic from the decision's inputs")
    type: CommandType
    model: str
    from_version: str | None = None
    to_version: str | None = None
    canary_weight: float | None = None
    approves: str | None = Field(default=None, description="command_id an approve approves")
    reason: str
    evidence: list[dict[str, Any]] = Field(
        default_factory=list, description="the reports that triggered the decision"
    )
    approval_required: bool = Field(
        default=False, description="the controller waits for an operator's approve"
    )
    issued_by: str = "policy"
    issued_at: datetime = Field(
        description="event time of the decision (the triggering report's window end), so a "
        "replay issues the same command; wall-clock time for operators' commands"
    )
    signature: str = Field(default="", description="HMAC-SHA256 of the other fields, hex")


#: State fields newer than the hash chain: left out of the JSON while unset, so an
#: event written before they existed serialises (and hashes) as it did then.
_OMITTED_WHEN_UNSET = ("shadow", "standby")


class DeploymentState(BaseModel):
    """What serves a model: the champion, a canary with its share, a shadow beside
    them (sees the champion's requests, its answers are not served), and after a
    blue-green ``switch`` the previous champion on ``standby`` for a switch back."""

    model_config = ConfigDict(extra="forbid")

    champion: str | None = None
    canary: str | None = None
    canary_weight: float = 0.0
    last_known_good: str | None = None
    shadow: str | None = Field(
        default=None, description="answers the champion's requests; its answers are not served"
    )
    standby: str | None = Field(
        default=None,
        description="the champion before a switch, kept ready: a rollback returns all "
        "traffic to it",
    )

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name in _OMITTED_WHEN_UNSET:
            if data.get(name) is None:
                data.pop(name, None)
        return data


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
