"""The deployment controller: signed commands in, registry changes and DeploymentEvents out.

For each command on ``commands`` (key: model):

1. Decode it; a message that is not a Command goes to ``deadletter``.
2. Refuse (a ``rejected`` DeploymentEvent with the reason) a command whose
   HMAC signature does not verify, whose issuer may not touch the model or
   issue that command type (with an issuers file, ``agents.controller.issuers``), for a
   model the registry does not know, or whose transition makes no sense
   (``streams.policy.transitions``), or whose target version's artifact no
   longer matches its SHA-256.
3. Refuse a ``canary``, ``shadow``, ``switch`` or ``promote`` of a version that
   fails the evaluation gate of its model card's risk tier, or has no
   evaluation while a gate applies (``streams.policy.gates``; the policy's
   ``gates``): the event names the gate and the numbers. A passing gate's
   numbers go into the event's reason too.
4. Hold a command for a model whose risk tier needs approval (or that asks for
   one) as ``pending_approval``, until an operator's signed ``approve`` names it.
   The gate is judged before (a failing version never waits for a person) and
   again at the approval (the champion it is compared with may have changed).
5. Apply it: commit the new state and the journal to the registry in one step,
   then publish the event. A ``retrain`` starts the retrain hook.

Blue-green and shadow (``streams.policy.transitions``): a ``switch`` gives a
version all traffic at once and keeps the champion before it on ``standby``
(also the last known good), so a ``rollback`` afterwards (the policy's
champion rules, or an operator) switches all traffic straight back to it. A
``shadow`` puts a version beside the champion on the same requests, its
answers not served; a ``shadow`` without ``to_version`` stops it. Both are
gated like a canary; stopping a shadow is not.

Exactly once: the journal (kept in the registry with the state, committed
atomically by the file registry) records every decided command_id with the
hash of its event, and the offset of the last command decided on each
partition of ``commands``. A message Kafka hands again after a restart (at or
before that offset) changes nothing: the newest decision's event is published
again unchanged (it may have died with the process; the audit chain counts an
identical repeat as a redelivery), older ones were acknowledged before the
next command was handled and are not repeated. The same command sent again
(a new message: an operator sending it twice, a replayed old command) is not
applied again either: a ``rejected`` event says it was already decided.

Each event carries the ``policy_sha256`` of its command (the policy file the
policy agent decided under; absent for operators' commands and under the
defaults, and then left out of the JSON, so older events hash as they did).

The hash chain (``streams.policy.chain``) runs per model through every event
of a model the registry knows. Commands for models it does not know are
refused with an unchained event (``prev_hash`` empty): they have no chain to
extend, and keeping one per invented name would let anyone grow the
controller's state.

Bounds: the journal keeps the last ``MAX_DECIDED`` command ids and at most
``MAX_PENDING`` commands awaiting approval per model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

from agents.controller.hooks import RetrainHook
from agents.controller.issuers import Issuers, refusal
from agents.controller.registry import Registry
from agents.inputs.codec import Origin, decode_one
from agents.runtime.runner import Outcome
from schemas.commands import Command, DeploymentEvent, DeploymentState
from schemas.policy import Policy
from streams.policy.chain import GENESIS, event_hash
from streams.policy.gates import GATED_COMMANDS, GateVerdict, judge_gate
from streams.policy.transitions import transition

logger = logging.getLogger(__name__)

# The journal must stay under the registry's 64 KiB per document: 500 ids with
# an 8-character hash prefix take about 23 KB; a pending command with the
# longest streak of evidence (16 windows) about 7 KB.
MAX_DECIDED = 500
MAX_PENDING = 5
MAX_ROLLED_BACK = 50  # versions remembered as rolled back, newest last


def _where(origin: Origin) -> str:
    return f"{origin.topic}[{origin.partition}]"


def _redelivered(journal: dict[str, Any], origin: Origin | None) -> bool:
    """True for a message at or before the last offset decided on its partition."""
    return origin is not None and \
        origin.offset <= journal.get("offsets", {}).get(_where(origin), -1)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Controller:
    AGENT = "controller"

    def __init__(
        self, registry: Registry, key: bytes, policy: Policy, *,
        issuers: Issuers | None = None,
        hook: RetrainHook | None = None, clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """``key`` is the command key; ``issuers`` the issuers file with its keys (None: off)."""
        self.registry, self._key, self.policy = registry, key, policy
        self.issuers, self.hook, self.clock = issuers, hook, clock

    def handle(
        self, raw: bytes | None, origin: Origin, table: MutableMapping[bytes, bytes]
    ) -> Outcome:
        command, dead = decode_one(Command, raw, origin, agent=self.AGENT)
        if command is None:
            return Outcome(dead=[dead] if dead else [])
        return Outcome(reports=self.decide(command, origin))

    # ------------------------------------------------------------------
    def decide(self, command: Command, origin: Origin | None = None) -> list[DeploymentEvent]:
        """The events for ``command``, read at ``origin`` (None: not from Kafka)."""
        model = command.model
        why = refusal(command, key=self._key, issuers=self.issuers)
        if model not in self.registry.models():
            return [self._unchained(command, why or
                                    f"refused: the registry has no model {model!r}")]
        state, journal = self.registry.load(model)
        if _redelivered(journal, origin):
            # Kafka handed this message again (the worker stopped before committing
            # its offset): it was decided, and its event was acknowledged before the
            # next command was handled (agents.runtime.runner), except maybe the newest's.
            last = journal.get("last")
            if last and last.get("command_id") == command.command_id:
                return [DeploymentEvent.model_validate(last)]  # same event, same hash
            return []
        if origin is not None:  # committed with whatever this command changes
            journal.setdefault("offsets", {})[_where(origin)] = origin.offset
        if why is not None:  # unsigned, forged, or an issuer acting outside its rules
            # not remembered as decided: a forger (or an issuer without the right)
            # must not pre-empt the genuine command's id
            return [self._record(command, "rejected", why, state, journal, remember=False)]
        decided = journal.setdefault("decided", {})
        if command.command_id in decided:
            last = journal.get("last")
            if last and last.get("command_id") == command.command_id:
                return [DeploymentEvent.model_validate(last)]  # same event, same hash
            return [self._record(command, "rejected",
                                 f"refused: command {command.command_id} was already decided "
                                 "(a command is applied at most once)", state, journal)]
        if command.type == "approve":
            return [self._approve(command, state, journal)]
        gate = self._gate(command, state)
        if gate is not None and not gate.passed:
            return [self._record(command, "rejected", f"refused: {gate.reason}", state, journal)]
        passed = f"; {gate.reason}" if gate is not None else ""
        # An operator's own command is a human decision already; the policy agent's
        # commands for a model in an approval tier wait for one.
        tiered = self.policy.decisions_for(model).needs_approval
        by_operator = command.issued_by.startswith("operator")
        if command.approval_required or (tiered and not by_operator):
            pending = journal.setdefault("pending", {})
            if len(pending) >= MAX_PENDING:
                return [self._record(command, "rejected", f"refused: {MAX_PENDING} commands "
                                     "already await approval for this model", state, journal)]
            pending[command.command_id] = command.model_dump(mode="json")
            return [self._record(command, "pending_approval",
                                 f"awaits an operator's approval (driftline command approve "
                                 f"{command.command_id}): {command.reason}{passed}", state,
                                 journal)]
        return [self._apply(command, state, journal, approved_by=None, gate=gate)]

    def _gate(self, command: Command, state: DeploymentState) -> GateVerdict | None:
        """The evaluation gate's verdict on the version ``command`` gives traffic (None: no
        gate applies, or the version is not registered, which ``transition`` refuses)."""
        model, version = command.model, command.to_version
        if command.type not in GATED_COMMANDS or version is None:
            return None
        gates = self.policy.gates_for(model)
        if not gates.configured:
            return None
        cards = {v.version: v.model_card for v in self.registry.versions(model)}
        if version not in cards:
            return None
        champion = state.champion
        return judge_gate(gates, version=version, card=cards[version], champion=champion,
                          champion_card=cards.get(champion) if champion else None)

    def _approve(self, approval: Command, state: DeploymentState,
                 journal: dict[str, Any]) -> DeploymentEvent:
        # Only this model's journal is searched: the approved command is for the
        # approval's model, which ``decide`` has authorised the approver for.
        pending = journal.setdefault("pending", {})
        target = pending.pop(approval.approves or "", None)
        if target is None:
            return self._record(approval, "rejected",
                                f"refused: no command {approval.approves!r} awaits approval",
                                state, journal)
        journal["decided"][approval.command_id] = "approval"
        command = Command.model_validate(target)
        gate = self._gate(command, state)  # again: the champion may have changed meanwhile
        if gate is not None and not gate.passed:
            return self._record(command, "rejected", f"refused at the approval by "
                                f"{approval.issued_by}: {gate.reason}", state, journal)
        return self._apply(command, state, journal, approved_by=approval.issued_by, gate=gate)

    def _apply(self, command: Command, state: DeploymentState, journal: dict[str, Any], *,
               approved_by: str | None, gate: GateVerdict | None = None) -> DeploymentEvent:
        versions = {v.version for v in self.registry.versions(command.model)}
        result = transition(state, command, versions)
        if not result.ok:
            return self._record(command, "rejected", f"refused: {result.refused}", state, journal)
        if result.verify is not None:
            problem = self.registry.verify(command.model, result.verify)
            if problem:
                return self._record(command, "rejected", f"refused: {problem}", state, journal)
        reason = command.reason if approved_by is None else \
            f"approved by {approved_by}: {command.reason}"
        if gate is not None:
            reason += f"; {gate.reason}"
        if command.type == "retrain" and self.hook is not None:
            reason += f"; {self.hook.start(command)}"
        if command.type == "rollback":  # for the verdict endpoint (agents.controller.verdict)
            gone = state.canary if result.state.canary is None and state.canary else \
                state.champion
            kept = [v for v in journal.get("rolled_back", []) if v != gone]
            journal["rolled_back"] = [*kept[-(MAX_ROLLED_BACK - 1):], gone]
        return self._record(command, "applied", reason, result.state, journal)

    # ------------------------------------------------------------------
    def _record(self, command: Command, status: str, reason: str, state: DeploymentState,
                journal: dict[str, Any], *, remember: bool = True) -> DeploymentEvent:
        """Chain the event, commit state and journal, return the event to publish."""
        event = self._event(command, status, reason, state, journal.get("head", GENESIS))
        decided = journal.setdefault("decided", {})
        if remember:
            decided[command.command_id] = event.hash[:8]
        for old in list(decided)[:-MAX_DECIDED]:
            del decided[old]
        journal["head"], journal["last"] = event.hash, event.model_dump(mode="json")
        self.registry.commit(command.model, state, journal)
        logger.info("%s %s %s: %s", command.model, command.type, status, reason)
        return event

    def _unchained(self, command: Command, reason: str) -> DeploymentEvent:
        logger.warning("%s %s rejected: %s", command.model, command.type, reason)
        return self._event(command, "rejected", reason, DeploymentState(), "")

    def _event(self, command: Command, status: str, reason: str, state: DeploymentState,
               prev_hash: str) -> DeploymentEvent:
        body = DeploymentEvent(
            model=command.model, command_id=command.command_id, action=command.type,
            status=status, reason=reason, state=state,  # type: ignore[arg-type]
            at=self.clock(), policy_sha256=command.policy_sha256, prev_hash=prev_hash,
            hash="",
        )
        return body.model_copy(update={"hash": event_hash(body.model_dump(mode="json"))})
