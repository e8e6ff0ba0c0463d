"""Per-issuer keys and authorisation of controller commands (the issuers file).

Off by default: with ``DRIFTLINE_ISSUERS`` empty every command is signed and
verified with the one command key (``agents.controller.keys``), exactly as before, and
``issued_by`` is only a claim. With an issuers file (``schemas.issuers``):

* the controller verifies a command with the key of its ``issued_by`` issuer,
  so the signature authenticates the issuer; a name the file does not list is
  refused, and so is a model outside the issuer's patterns or a command type
  it may not issue (``refusal``);
* the worker's own issuers, ``policy`` and ``retrain-hook``, sign with the
  command key when the file has no entry for them (no restriction then: the
  command key is the worker's, so keep it from operators); an entry gives
  them their own key and rules like anyone else;
* an ``approve`` is authorised against its model, which is the approved
  command's model (the controller looks the approved command up in that
  model's journal only), and needs ``approve`` among the issuer's commands;
  the approver need not be allowed the approved command's own type;
* every key is read at start (``load``): an unreadable or short key, two
  issuers with the same key, or an operator's key equal to the command key
  stop the worker with the file, line, field and reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from agents.config import Settings
from agents.controller.keys import SigningKeyError, command_key, key_bytes, read_key_file
from schemas.commands import Command
from schemas.issuers import IssuersError, IssuersFile, load_issuers
from streams.policy.commands import verify

WORKER_ISSUERS = frozenset({"policy", "retrain-hook"})


@dataclass(frozen=True)
class Issuers:
    """The issuers file with every issuer's key read."""

    file: IssuersFile
    keys: dict[str, bytes] = field(repr=False)


def issuer_key(file: IssuersFile, name: str) -> bytes:
    """The key of issuer ``name`` from its key_file or key_env; IssuersError saying where."""
    path, env = file.key_path(name), file.issuers[name].key_env
    try:
        if path is not None:
            return read_key_file(path, what=f"issuer {name}'s key")
        value = os.environ.get(env or "", "")
        if not value:
            raise SigningKeyError(f"the environment variable {env} is not set")
        return key_bytes(value, what=f"issuer {name}'s key in ${env}")
    except SigningKeyError as exc:
        raise IssuersError(f"{file.where(name)}: {exc}") from exc


def load(settings: Settings, *, worker_key: bytes | None = None) -> Issuers | None:
    """The issuers file of ``settings`` with its keys, or None when the feature is off.

    ``worker_key`` (the command key) is compared with the other issuers' keys:
    an issuer holding it could sign as ``policy``.
    """
    if not settings.issuers:
        return None
    file = load_issuers(settings.issuers)
    keys: dict[str, bytes] = {}
    for name in file.issuers:
        key = issuer_key(file, name)
        same = next((other for other, k in keys.items() if k == key), None)
        if same is not None:
            raise IssuersError(f"{file.where(name)}: the same key as issuer {same}; each "
                               "issuer needs its own key, or a signature no longer says who "
                               "signed")
        if key == worker_key and name not in WORKER_ISSUERS:
            raise IssuersError(f"{file.where(name)}: the command key (the worker's own); "
                               "give the issuer a key of its own")
        keys[name] = key
    return Issuers(file, keys)


def signing_key(settings: Settings, issuer: str) -> bytes:
    """The key ``issuer`` signs with: its own if the issuers file lists it, else the command key.

    Reads only that issuer's key, so a process that signs for one issuer (the
    policy agent, the retrain hook) needs no access to the others' keys.
    """
    if settings.issuers:
        file = load_issuers(settings.issuers)
        if issuer in file.issuers:
            return issuer_key(file, issuer)
    return command_key(settings)


def refusal(command: Command, *, key: bytes, issuers: Issuers | None) -> str | None:
    """Why the controller refuses ``command`` before looking at its content, or None.

    ``key`` is the command key: with no issuers file it verifies every command,
    with one it verifies the worker's own issuers that the file does not list.
    """
    if not command.signature:
        return "refused: no signature"
    if issuers is None:
        if verify(command, key):
            return None
        return ("refused: the signature does not verify: the command was not signed with "
                "the controller's key, or was changed after signing")
    name = command.issued_by
    rule = issuers.file.issuers.get(name)
    own = issuers.keys.get(name, key if name in WORKER_ISSUERS else None)
    if own is None:
        return f"refused: issuer {name[:100]!r} is not in the issuers file"
    if not verify(command, own):
        return (f"refused: the signature does not verify under issuer {name}'s key: the "
                f"command was not signed by {name}, or was changed after signing")
    why = rule.refusal(name, command.type, command.model) if rule is not None else None
    return f"refused: {why}" if why else None
