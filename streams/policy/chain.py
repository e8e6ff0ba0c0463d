"""The hash chain of deployment events: every event names the hash of the one before.

Per model (the ``deployments`` topic is keyed by model, so a model's events
are in order on one partition): ``hash = sha256(canonical JSON of the event
without its hash)``, and ``prev_hash`` is the previous event's hash, or
``GENESIS`` for a model's first event. Changing, removing or reordering any
event breaks the chain at that point, and ``verify_chain`` names it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from streams.policy.commands import canonical

GENESIS = "0" * 64


def event_hash(event: dict[str, Any]) -> str:
    """SHA-256 of the event (JSON form) without its ``hash`` field."""
    body = {k: v for k, v in event.items() if k != "hash"}
    return hashlib.sha256(canonical(body)).hexdigest()


@dataclass(frozen=True)
class ChainCheck:
    events: int
    models: int
    broken_at: int | None = None  # position in the input of the first broken link
    reason: str = ""
    duplicates: int = 0  # exact re-publications of the previous event (a redelivery)
    unchained: int = 0  # refusals for models the registry does not know (prev_hash "")

    @property
    def intact(self) -> bool:
        return self.broken_at is None


def verify_chain(events: Iterable[dict[str, Any]]) -> ChainCheck:
    """Check every model's chain in ``events`` (JSON dicts in topic order).

    An event identical to its model's previous one (same hash) is a
    re-publication after a crash between the registry commit and the send:
    counted as a duplicate, not a break. An event with an empty ``prev_hash``
    (a refusal for a model the registry does not know) belongs to no chain;
    its own hash is still checked.
    """
    heads: dict[str, str] = {}
    count = duplicates = unchained = 0
    for position, event in enumerate(events):
        count += 1
        model = str(event.get("model"))
        claimed = event.get("hash")
        actual = event_hash(event)
        if claimed != actual:
            return ChainCheck(count, len(heads), position,
                              f"event {position} ({model}, command {event.get('command_id')}) "
                              f"was altered: its hash {str(claimed)[:12]}... does not match its "
                              f"content ({actual[:12]}...)")
        if event.get("prev_hash") == "":
            unchained += 1  # a refusal for an unknown model: no chain to extend
            continue
        head = heads.get(model, GENESIS)
        if claimed == head and model in heads:
            duplicates += 1
            continue
        if event.get("prev_hash") != head:
            return ChainCheck(count, len(heads), position,
                              f"event {position} ({model}, command {event.get('command_id')}) "
                              f"does not follow the previous {model} event: prev_hash "
                              f"{str(event.get('prev_hash'))[:12]}... but the chain is at "
                              f"{head[:12]}... (an event was removed, reordered or inserted)")
        heads[model] = actual
    return ChainCheck(count, len(heads), duplicates=duplicates, unchained=unchained)
