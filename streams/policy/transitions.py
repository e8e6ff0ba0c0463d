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
        new = state.model_copy(update={"canary": to, "canary_weight": weight,
                                       "shadow": None if state.shadow == to else state.shadow})
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
            shadow=None if state.shadow == to else state.shadow,
        )  # a standby of an earlier switch is not the champion before this one: dropped
        return Transition(new, verify=to)
    if kind == "switch":
        return _switch(state, command, versions)
    if kind == "shadow":
        return _shadow(state, command, versions)
    if kind == "rollback":
        if state.canary is not None and frm in (None, state.canary):
            # a failing canary: its traffic goes back to the champion
            return Transition(state.model_copy(update={"canary": None, "canary_weight": 0.0}))
        if frm is not None and frm != state.champion:
            return _refuse(state, f"cannot roll back {frm}: it is neither the champion "
                           f"({state.champion}) nor the canary ({state.canary})")
        # after a switch, the champion before it waits on standby: the switch back
        target = to or state.standby or state.last_known_good
        if target is None or target == state.champion:
            return _refuse(state, "no previous good version to roll back to: the champion "
                           f"{state.champion} is the only known good version")
        if target not in versions:
            return _refuse(state, f"cannot roll back to {target}: the registry has no such "
                           f"version of {command.model}")
        new = DeploymentState(champion=target, last_known_good=target,
                              shadow=None if state.shadow == target else state.shadow)
        return Transition(new, verify=target)
    return _refuse(state, f"{kind} is not a deployment change")


def _switch(state: DeploymentState, command: Command, versions: Collection[str]) -> Transition:
    """Blue-green: ``to`` takes all traffic at once (a canary is ended, its share goes to
    ``to`` too); the champion before it stays on ``standby`` and is the last known good,
    so a rollback switches straight back to it."""
    to, frm = command.to_version, command.from_version
    if to is None or to not in versions:
        return _refuse(state, f"cannot switch to {to!r}: the registry has no such version "
                       f"of {command.model}")
    if to == state.champion:
        return _refuse(state, f"{to} is already the champion: nothing to switch")
    if state.champion is None:
        return _refuse(state, f"no champion serves {command.model}, so there is nothing to "
                       f"switch from: promote {to} instead")
    if frm is not None and frm != state.champion:
        return _refuse(state, f"the command switches from {frm}, but the champion is "
                       f"{state.champion}; it was decided on a state that has changed")
    new = DeploymentState(
        champion=to, last_known_good=state.champion, standby=state.champion,
        shadow=None if state.shadow == to else state.shadow,
    )
    return Transition(new, verify=to)


def _shadow(state: DeploymentState, command: Command, versions: Collection[str]) -> Transition:
    """``to`` answers the champion's requests beside it, unserved; no ``to``: the shadow
    stops (``from``, when given, must name it)."""
    to, frm = command.to_version, command.from_version
    if to is None:
        if state.shadow is None:
            return _refuse(state, f"{command.model} has no shadow to stop")
        if frm is not None and frm != state.shadow:
            return _refuse(state, f"cannot stop the shadow {frm}: the shadow is {state.shadow}")
        return Transition(state.model_copy(update={"shadow": None}))
    if to not in versions:
        return _refuse(state, f"cannot deploy {to!r} as shadow: the registry has no such "
                       f"version of {command.model}")
    for role in ("champion", "canary", "shadow"):
        if to == getattr(state, role):
            return _refuse(state, f"{to} is already the {role}: a shadow runs beside the "
                           "champion, not in its place")
    if state.champion is None:
        return _refuse(state, f"no champion serves {command.model}: a shadow needs one to "
                       "shadow")
    return Transition(state.model_copy(update={"shadow": to}), verify=to)
