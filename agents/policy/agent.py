"""The policy agent: drift, KPI, poisoning and deployment events in, signed commands out.

One ``ModelState`` per model in the table ``policy-state`` (key ``p|<model>``,
bounded as ``streams.policy.state`` says), for at most ``max_models`` models per
partition besides the policy file's (``agents.inputs.admission``).
``streams.policy.decide`` makes the decisions, this module only decodes, signs
and writes. Each command carries the SHA-256 of the policy file it was decided
under (``policy_sha256``, signed with the rest; none under the built-in
defaults), which the controller copies into its deployment event and the audit
report compares with the policy it is given. Every input topic is
keyed by model and needs the same partition count, so a model's reports and
its deployment events meet on one partition, in order.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping

import faust
from pydantic import BaseModel

from agents.config import Settings
from agents.controller.issuers import signing_key
from agents.inputs.admission import Admission
from agents.inputs.codec import Origin, decode_one
from agents.runtime import runner
from agents.runtime.runner import Outcome
from schemas.commands import DeploymentEvent
from schemas.policy import Policy, policy_sha256
from schemas.reports import DriftReport, KpiReport, PoisoningReport
from schemas.windows import CountWindow
from streams.policy.commands import sign
from streams.policy.decide import decide
from streams.policy.pairing import windows_beside
from streams.policy.state import MAX_POOLED, ModelState

logger = logging.getLogger(__name__)

SOURCES: dict[str, type[BaseModel]] = {
    "drift": DriftReport, "kpi": KpiReport, "poisoning": PoisoningReport,
    "deployments": DeploymentEvent,
}


class PolicyHandler:
    AGENT = "policy"

    def __init__(self, policy: Policy, key: bytes, settings: Settings) -> None:
        self.policy, self._key = policy, key
        # The file ``policy`` was loaded from at start (settings.policy): the policy is not
        # reloaded while the worker runs, so this is the policy in force for every command.
        self.policy_sha256 = policy_sha256(settings.policy)
        self.kinds = {settings.topic(name): model for name, model in SOURCES.items()}
        # Only admitted models get state in the table (agents.inputs.admission).
        self.admission = Admission(agent=self.AGENT, max_models=settings.max_models,
                                   listed=policy.models)
        for warning in count_window_warnings(policy):
            logger.warning("%s", warning)

    def handle(
        self, raw: bytes | None, origin: Origin, table: MutableMapping[bytes, bytes]
    ) -> Outcome:
        kind = self.kinds[origin.topic]
        event, dead = decode_one(kind, raw, origin, agent=self.AGENT)
        if event is None:
            return Outcome(dead=[dead] if dead else [])
        model: str = event.model  # type: ignore[attr-defined]
        refused = self.admission.refuse_one(model, raw, origin, table)
        if refused is not None:
            return Outcome(dead=[refused])
        key = f"p|{model}".encode()
        stored = table.get(key)
        state = ModelState.model_validate_json(stored) if stored else ModelState()
        out = decide(state, event, self.policy.decisions_for(model))  # type: ignore[arg-type]
        table[key] = out.state.model_dump_json().encode()
        for held in out.held:
            logger.info("%s", held)
        stamp = {"policy_sha256": self.policy_sha256}
        return Outcome(reports=[sign(c.model_copy(update=stamp), self._key)
                                for c in out.commands], counted=1)


def count_window_warnings(policy: Policy) -> list[str]:
    """Canary weights too small for the policy's KPI count windows, a sentence per policy
    section (empty: none). A canary's count window is compared with the champion's
    windows overlapping it, pooled, and the policy agent keeps the champion's newest
    ``MAX_POOLED`` count windows: at a weight whose canary window spans more of them,
    the comparison is never made (docs/decisions.md, "Count windows")."""
    sections = [("the default policy", policy.kpi, policy.decisions)]
    sections += [(f"model {m}", policy.kpi_for(m), policy.decisions_for(m))
                 for m, o in sorted(policy.models.items()) if o.kpi or o.decisions]
    found = []
    for where, kpi, rules in sections:
        if not isinstance(kpi.window, CountWindow):
            continue
        weights = [w for w in rules.delivery.canary_steps if w < 1.0]
        if rules.shadow.healthy_windows:
            weights.append(rules.shadow.canary_weight)
        if weights and windows_beside(min(weights)) > MAX_POOLED:
            found.append(
                f"{where}: kpi.window is a count window ({kpi.window.events} predictions) "
                f"and a canary at weight {min(weights):g} spans about "
                f"{windows_beside(min(weights))} of the champion's windows, more than the "
                f"{MAX_POOLED} the policy agent keeps: its comparison with the champion "
                "(steps, promotion, the error-rate rollback) is not made at that weight; "
                "start canaries at a higher weight or use a duration kpi.window "
                "(docs/decisions.md)")
    return found


def register(app: faust.App, settings: Settings, policy: Policy) -> faust.types.AgentT:
    # The "policy" issuer's own key if the issuers file lists it, else the command key.
    handler = PolicyHandler(policy, signing_key(settings, "policy"), settings)
    agent, _ = runner.register(
        app, settings, handler, name="policy", sources=list(SOURCES), output="commands",
        table="policy-state",
    )
    return agent
