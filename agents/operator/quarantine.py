"""Operators and the quarantine: list held-back training records, release them.

A release re-publishes the record unchanged on ``training-data.clean`` and
records the release itself on ``training-data.quarantine``: a copy of the
QuarantinedRecord with ``released_by``, ``released_at`` and
``release_reason``. Nothing is deleted; ``list`` shows the records not released.
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from typing import Any

import orjson

from agents.config import Settings
from agents.operator import commands as operator
from agents.operator.tail import read_to_end
from schemas.errors import DriftlineError
from schemas.reports import QuarantinedRecord


class NotQuarantined(DriftlineError):
    """The record to release is not (or no longer) in quarantine."""


def held(settings: Settings, *, model: str | None = None) -> list[QuarantinedRecord]:
    """Quarantined records not released, oldest first."""
    records: dict[str, QuarantinedRecord] = {}
    released: set[str] = set()
    for value in read_to_end(settings.bootstrap, settings.topic("training-data.quarantine")):
        item = QuarantinedRecord.model_validate_json(value)
        if model is not None and item.record.model != model:
            continue
        key = f"{item.record.model}/{item.record.record_id}"
        if item.released_by:
            released.add(key)
        else:
            records[key] = item
    return [r for k, r in records.items() if k not in released]


def release(settings: Settings, record_id: str, *, model: str, reason: str,
            operator_name: str | None = None) -> QuarantinedRecord:
    match = [r for r in held(settings, model=model) if r.record.record_id == record_id]
    if not match:
        raise NotQuarantined(f"{model}/{record_id} is not in quarantine (never held, or "
                             "already released); `driftline quarantine list` shows what is")
    item = match[-1]
    note = item.model_copy(update={"released_by": f"operator:{operator_name or getpass.getuser()}",
                                   "released_at": datetime.now(UTC), "release_reason": reason})
    operator.publish(settings, "training-data.clean", model,
                     [orjson.dumps({"events": [item.record.model_dump(mode="json")]})])
    operator.publish(settings, "training-data.quarantine", model,
                     [note.model_dump_json().encode()])
    return note


def describe(item: QuarantinedRecord) -> dict[str, Any]:
    r = item.record
    return {"record_id": r.record_id, "model": r.model, "source": r.source,
            "ts": r.ts.isoformat(), "reasons": item.reasons, "label": r.label}
