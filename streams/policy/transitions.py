"""What a command may do to a model's deployment state, and what makes no sense.

``transition`` is the controller's rule book, free of I/O: given the current
state, the command and the versions the registry holds, it returns the new
state, or the reason to refuse. Checksums and signatures are checked by the
controller around it (they need the registry and the key).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from schemas.commands import Command, DeploymentState


@dataclass(frozen=True)
class Transition:
    state: DeploymentState
    refused: str = ""  # why the command is refused; empty when it applies
    verify: str | None = None  # the version whose checksum must hold before applying

    @property
    def ok(self) -> bool:
        return not self.refused


def _refuse(state: DeploymentState, reason: str) -> Transition:
    return Transition(state, refused=reason)


def transition(
    state: DeploymentState, command: Command, versions: Collection[str]
) -> Transition:
    """The state after ``command``, or why it is refused.

    >>> s = DeploymentState(champion="v1")
    >>> from datetime import datetime, UTC
    >>> c = Command(command_id="x", type="rollback", model="m", reason="r",
    ...             issued_at=datetime(2026, 1, 1, tzinfo=UTC))
    >>> transition(s, c, {"v1"}).refused
    'no previous good version to roll back to: the champion v1 is the only known good version'
    """
    kind, to, frm = command.type, command.to_version, command.from_version
    if kind in ("retrain", "hold"):
        return Transition(state)
    if kind == "canary":
        if to is None or to not in versions:
            return _refuse(state, f"cannot deploy {to!r} as canary: the registry has no such "
                           f"version of {command.model}")
        if to == state.champion:
            return _refuse(state, f"{to} is already the champion")
        weight = command.canary_weight if command.canary_weight is not None else 0.1
        if not 0 < weight <= 1:
            return _refuse(state, f"canary weight {weight} is not in (0, 1]")
        new = state.model_copy(update={"canary": to, "canary_weight": weight})
        return Transition(new, verify=to)
    if kind == "set_canary_weight":
        if state.canary is None:
            return _refuse(state, "there is no canary whose weight could change")
        if to is not None and to != state.canary:
            return _refuse(state, f"{to} is not the canary (the canary is {state.canary})")
        step = command.canary_weight
        if step is None or not 0 < step <= 1:
            return _refuse(state, f"canary weight {step} is not in (0, 1]")
        return Transition(state.model_copy(update={"canary_weight": step}))
    if kind == "promote":
        if to is None or to not in versions:
            return _refuse(state, f"cannot promote {to!r}: the registry has no such version "
                           f"of {command.model}")
        if to == state.champion:
            return _refuse(state, f"{to} is already the champion")
        if frm is not None and frm != state.champion:
            return _refuse(state, f"the command promotes over {frm}, but the champion is "
                           f"{state.champion}; it was decided on a state that has changed")
        new = DeploymentState(
            champion=to,
            canary=None if state.canary == to else state.canary,
            canary_weight=0.0 if state.canary == to else state.canary_weight,
            last_known_good=state.champion or state.last_known_good,
        )
        return Transition(new, verify=to)
    if kind == "rollback":
        if state.canary is not None and frm in (None, state.canary):
            # a failing canary: its traffic goes back to the champion
            return Transition(state.model_copy(update={"canary": None, "canary_weight": 0.0}))
        if frm is not None and frm != state.champion:
            return _refuse(state, f"cannot roll back {frm}: it is neither the champion "
                           f"({state.champion}) nor the canary ({state.canary})")
        target = to or state.last_known_good
        if target is None or target == state.champion:
            return _refuse(state, "no previous good version to roll back to: the champion "
                           f"{state.champion} is the only known good version")
        if target not in versions:
            return _refuse(state, f"cannot roll back to {target}: the registry has no such "
                           f"version of {command.model}")
        new = DeploymentState(champion=target, last_known_good=target)
        return Transition(new, verify=target)
    return _refuse(state, f"{kind} is not a deployment change")
