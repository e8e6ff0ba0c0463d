"""The model card a version is registered with: who answers for it and how risky it is.

Required (``Registry.register`` refuses a card without them, naming the field):

* ``owner``: the business owner who answers for the model (a team or a person),
  non-empty text;
* ``risk_tier``: the EU AI Act's risk class of the system the model serves in:

  - ``minimal``: no obligations beyond good practice (spam filters, recommenders
    of low consequence);
  - ``limited``: transparency obligations (people must know they deal with an
    AI system or AI-generated content: chatbots, generated media);
  - ``high``: the Act's Annex III uses and safety components (credit scoring,
    hiring, essential services, ...): risk management, data governance, logging,
    human oversight and accuracy monitoring are mandatory. Pair it with a policy
    whose ``decisions.approval_tiers`` hold the model's policy tier, so a person
    approves each deployment change (``driftline inventory`` flags it otherwise).

  "unacceptable" (the Act's prohibited practices, Art. 5) is not a tier a
  version can be registered with: such a system must not be put into service.

Optional: ``purpose`` (the intended use, in words), ``training_data`` (a
description, and the SHA-256 of the data as trained on, so a reviewer can tell
whether two versions saw the same data), ``evaluation`` (results measured
on a held-out set before registration: ``metrics``, the set's ``held_out``
``sha256`` and ``size``, optional per-``segments`` metrics; the earlier flat
``{"roc_auc": 0.91, "dataset": "holdout 2026-01"}`` is still read, see
``schemas.evaluation``). Any other member (``limitations``, ``intended_use``,
...) is kept as given.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from schemas.evaluation import evaluation_problem

CardRiskTier = Literal["minimal", "limited", "high"]
RISK_TIERS: tuple[CardRiskTier, ...] = ("minimal", "limited", "high")
SHA256_PATTERN = r"^[0-9a-f]{64}$"


class TrainingData(BaseModel):
    """What the version was trained on."""

    model_config = ConfigDict(extra="allow", frozen=True)

    description: str = Field(min_length=1, description="what the data is, where it came from")
    sha256: str | None = Field(
        default=None,
        pattern=SHA256_PATTERN,
        description="SHA-256 (lower-case hex) of the training data as used",
    )
    uri: str | None = Field(default=None, description="where the data lives")


class ModelCard(BaseModel):
    """A version's model card (see the module docstring for what each field means)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    owner: str = Field(
        min_length=1, description="business owner: the team or person answering for the model"
    )
    risk_tier: CardRiskTier = Field(description="EU AI Act risk class: minimal, limited or high")
    purpose: str | None = Field(default=None, description="the intended use, in words")
    training_data: TrainingData | None = Field(
        default=None,
        description="description and SHA-256 of the training data; a string "
        "is read as the description",
    )
    evaluation: dict[str, Any] | None = Field(
        default=None,
        description="results on a held-out set measured before registration: metrics, "
        "held_out {sha256, size}, segments (schemas.evaluation); a flat {metric: value} is "
        "read too",
    )

    @field_validator("owner")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("owner is blank: name the team or person answering for the model")
        return value

    @field_validator("evaluation")
    @classmethod
    def _readable_evaluation(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        """Kept as given, but only if the gates can read it (``schemas.evaluation``)."""
        problem = None if value is None else evaluation_problem(value)
        if problem is not None:  # "held_out.size: ...": card_problem prefixes "evaluation."
            raise PydanticCustomError("evaluation", problem)
        return value

    @field_validator("training_data", mode="before")
    @classmethod
    def _text_is_description(cls, value: object) -> object:
        return {"description": value} if isinstance(value, str) else value


def card_problem(card: dict[str, Any] | None) -> str | None:
    """None if ``card`` is a valid model card, else one sentence naming the field.

    >>> card_problem({"owner": "risk-ml"})
    "risk_tier is missing: set it to one of minimal, limited, high (the EU AI Act's tiers)"
    >>> card_problem({"owner": "risk-ml", "risk_tier": "high"}) is None
    True
    """
    if card is None:
        return "the model card is missing: owner and risk_tier are required"
    if not isinstance(card, dict):
        return f"the model card must be a JSON object, not {type(card).__name__}"
    for field in ("owner", "risk_tier"):
        if field not in card or card[field] is None:
            what = (
                "name the team or person answering for the model"
                if field == "owner"
                else f"set it to one of {', '.join(RISK_TIERS)} (the EU AI Act's tiers)"
            )
            return f"{field} is missing: {what}"
    if card["risk_tier"] == "unacceptable":
        return (
            "risk_tier 'unacceptable' is a prohibited practice (EU AI Act Art. 5): such a "
            "system must not be put into service, so it cannot be registered"
        )
    try:
        ModelCard.model_validate(card)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        if error["type"] == "evaluation":
            return f"evaluation.{error['msg']}"
        if where == "risk_tier":
            return (
                f"risk_tier {card['risk_tier']!r} is not a tier: use one of {', '.join(RISK_TIERS)}"
            )
        return f"{where}: {error['msg']}"
    return None
