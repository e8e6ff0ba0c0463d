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


#: A SHA-256 digest in lower-case hex.
SHA256_HEX = r"^[0-9a-f]{64}$"


def _omit_none(data: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """``data`` without those of ``names`` that are None: fields newer than a signature or
    a hash chain stay out of the JSON while unset, so what was written before they
    existed serialises (and verifies, and hashes) as it did then."""
    for name in names:
        if data.get(name) is None:
            data.pop(name, None)
    return data


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
    policy_sha256: str | None = Field(
        default=None,
        pattern=SHA256_HEX,
        description="SHA-256 of the policy file the policy agent decided under (signed with "
        "the rest); absent for operators' commands and under the built-in defaults",
    )
    signature: str = Field(default="", description="HMAC-SHA256 of the other fields, hex")

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _omit_none(handler(self), ("policy_sha256",))


#: State fields newer than the hash chain (see ``_omit_none``).
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
        return _omit_none(handler(self), _OMITTED_WHEN_UNSET)


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
    policy_sha256: str | None = Field(
        default=None,
        pattern=SHA256_HEX,
        description="the command's policy_sha256: the policy file it was decided under "
        "(absent when the command has none)",
    )
    prev_hash: str
    hash: str

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _omit_none(handler(self), ("policy_sha256",))
