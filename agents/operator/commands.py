"""What operators do by hand: issue and approve commands, verify the audit chain.

``driftline command rollback --model M`` builds a Command, signs it and
publishes it on ``commands``; the controller applies it like any other and
records a DeploymentEvent. Operators' commands carry
``issued_by = "operator:<user>"`` and a random nonce in their id, so two manual
rollbacks a week apart are two commands.

The signing key: ``--key-file`` (the operator's own key, for a controller with
an issuers file), else the issuer's key if this machine's issuers file lists
the issuer, else the command key (agents.controller.keys, agents.controller.issuers).
"""

from __future__ import annotations

import getpass
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from agents.config import Settings
from agents.controller.issuers import signing_key
from agents.controller.keys import read_key_file
from agents.dev import simulate
from agents.operator.tail import read_to_end
from schemas.commands import Command, CommandType
from streams.policy.chain import ChainCheck, verify_chain
from streams.policy.commands import command_id, sign


def operator_command(
    settings: Settings, type_: CommandType, model: str, *, to_version: str | None = None,
    from_version: str | None = None, weight: float | None = None, approves: str | None = None,
    reason: str = "", issuer: str | None = None, issued_by: str | None = None,
    key_file: str | None = None,
) -> Command:
    """A signed command; ``issued_by`` defaults to ``operator:<issuer or login name>``
    (automation such as the retrain hook names itself instead).

    ``key_file`` holds the key to sign with (the issuer's own); without it the
    key comes from ``agents.controller.issuers.signing_key``.
    """
    if issuer and issuer.startswith("operator:"):
        issuer = issuer.removeprefix("operator:")
    issued_by = issued_by or f"operator:{issuer or getpass.getuser()}"
    cid = command_id(type_, model, from_version=from_version, to_version=to_version,
                     canary_weight=weight, approves=approves, nonce=uuid.uuid4().hex)
    command = Command(
        command_id=cid, type=type_, model=model, from_version=from_version,
        to_version=to_version, canary_weight=weight, approves=approves,
        reason=reason or f"{type_} issued by {issued_by}", issued_by=issued_by,
        issued_at=datetime.now(UTC),
    )
    key = read_key_file(Path(key_file).expanduser(), what=f"{issued_by}'s key") if key_file \
        else signing_key(settings, issued_by)
    return sign(command, key)


def publish(settings: Settings, topic: str, key: str, values: list[bytes]) -> None:
    """Deliver ``values`` to ``topic`` (prefixed) or raise (simulate.publish checks each)."""
    simulate.publish(simulate.make_producer(settings.bootstrap), settings.topic(topic), key,
                     values)


def send(settings: Settings, command: Command) -> None:
    publish(settings, "commands", command.model, [command.model_dump_json().encode()])


def audit(settings: Settings, *, model: str | None = None) -> tuple[ChainCheck, list[Any]]:
    """Read ``deployments`` and check every model's hash chain."""
    events = [orjson.loads(v) for v in read_to_end(settings.bootstrap,
                                                    settings.topic("deployments"))]
    if model is not None:
        events = [e for e in events if e.get("model") == model]
    return verify_chain(events), events
