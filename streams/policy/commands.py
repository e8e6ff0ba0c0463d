"""Command ids, signatures and the canonical bytes both are computed on.

* ``command_id`` is a hash of the decision's inputs (type, model, versions,
  weight, approved id and the identities of the evidence reports), so a replay
  or a restarted policy agent issues the same id and the controller can tell a
  redelivery from a new decision.
* The signature is HMAC-SHA256 over the canonical JSON of every field but the
  signature (sorted keys, no spaces, UTC times): a changed body, a changed
  reason or swapped evidence no longer verifies.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson

from schemas.commands import Command


def canonical(value: Any) -> bytes:
    """Sorted-key compact JSON; the bytes hashes and signatures are taken on."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z)


def evidence_key(report: dict[str, Any]) -> dict[str, Any]:
    """What identifies a report: its kind, model, version, variant, window and revision.
    A count window's number is part of it (two count windows may span the same times);
    a window of time has none in its evidence, so its commands' ids are as before."""
    keys = ("kind", "model", "model_version", "variant", "window_start", "window_end",
            "window_index", "revision", "command_id")
    return {k: report[k] for k in keys if k in report}


def command_id(
    type_: str, model: str, *, from_version: str | None = None, to_version: str | None = None,
    canary_weight: float | None = None, approves: str | None = None,
    evidence: list[dict[str, Any]] = (),  # type: ignore[assignment]
    nonce: str = "",
) -> str:
    """32 hex characters of SHA-256 over the decision's inputs.

    ``nonce`` separates operators' commands that would otherwise look alike
    (two manual rollbacks a week apart); the policy agent leaves it empty.

    >>> a = command_id("rollback", "fraud", from_version="v2", to_version="v1")
    >>> a == command_id("rollback", "fraud", from_version="v2", to_version="v1"), len(a)
    (True, 32)
    >>> a == command_id("rollback", "fraud", from_version="v3", to_version="v1")
    False
    """
    inputs = {
        "type": type_, "model": model, "from": from_version, "to": to_version,
        "weight": canary_weight, "approves": approves,
        "evidence": [evidence_key(e) for e in evidence], "nonce": nonce,
    }
    return hashlib.sha256(canonical(inputs)).hexdigest()[:32]


def _body(command: Command) -> bytes:
    return canonical(command.model_dump(mode="json", exclude={"signature"}))


def sign(command: Command, key: bytes) -> Command:
    """The command with its HMAC-SHA256 signature (hex)."""
    digest = hmac.new(key, _body(command), hashlib.sha256).hexdigest()
    return command.model_copy(update={"signature": digest})


def verify(command: Command, key: bytes) -> bool:
    """True when the signature matches the command's body under ``key`` (constant time)."""
    if not command.signature:
        return False
    expected = hmac.new(key, _body(command), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, command.signature)
