"""Training records that wait in the poisoning guard's table for their model's trusted set.

``references`` and ``training-data`` are read in one stream with no order between
them, so records published right after ``driftline reference build`` returns
can be read before the profile with their model's trusted set. Such records
wait here, in the table (so they survive a restart and move with their
partition), and are screened in order when the trusted set arrives.

State per model: an index (``hq|<model>``) and one entry per held message
(``h|<model>|<n>``: the message's records of that model, and the model's
event-time watermark when it arrived). Bounds, from the model's poisoning
policy: at most ``hold_max_records`` records (beyond, the oldest messages
leave); a message leaves once the model's training data has moved more than
``hold_max_age`` of event time past the watermark it arrived at. Records that
leave so are quarantined unscreened (``no_trusted_set``) by the handler.
Arrival watermarks never decrease, so both limits take messages from the front.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from schemas.events import TrainingRecord

Table = MutableMapping[bytes, bytes]


@dataclass
class _Index:
    first: int = 0  # number of the oldest entry held
    next: int = 0  # number of the next entry
    records: int = 0  # records held in all entries
    watermark_ms: int | None = None  # newest ts of the model's records seen while held


@dataclass(frozen=True)
class Left:
    """Held records that leave unscreened, and why."""

    records: list[TrainingRecord]
    why: str


def _index_key(model: str) -> bytes:
    return f"hq|{model}".encode()


def _entry_key(model: str, n: int) -> bytes:
    return f"h|{model}|{n:012d}".encode()


def _index(table: Table, model: str) -> _Index:
    raw = table.get(_index_key(model))
    return _Index(**orjson.loads(raw)) if raw is not None else _Index()


def _restore(entry: bytes) -> list[TrainingRecord]:
    return [TrainingRecord.model_validate(r) for r in orjson.loads(entry)["records"]]


def waiting(table: Table, model: str) -> int:
    """Records of ``model`` held now."""
    return _index(table, model).records


def hold(
    table: Table,
    model: str,
    records: list[TrainingRecord],
    *,
    max_records: int,
    max_age_ms: int,
) -> list[Left]:
    """Hold ``records`` (one message's, of ``model``) until the trusted set arrives; returns
    the held records that leave unscreened now (these, or older ones), oldest first."""
    index = _index(table, model)
    newest = max(r.ts_ms() for r in records)
    index.watermark_ms = newest if index.watermark_ms is None else max(index.watermark_ms, newest)
    entry: dict[str, Any] = {
        "arrived_ms": index.watermark_ms,
        "records": [r.model_dump(mode="json") for r in records],
    }
    table[_entry_key(model, index.next)] = orjson.dumps(entry)
    index.next += 1
    index.records += len(records)
    left: list[Left] = []
    while index.first < index.next:
        key = _entry_key(model, index.first)
        raw = table[key]
        arrived = int(orjson.loads(raw)["arrived_ms"])
        if index.records > max_records:
            why = (
                f"more than hold_max_records ({max_records}) records of {model} waited for "
                f"its trusted set; the oldest leave"
            )
        elif index.watermark_ms - arrived > max_age_ms:
            why = (
                f"{model}'s training data moved on more than hold_max_age "
                f"({max_age_ms // 1000} s of event time) while they waited for its trusted set"
            )
        else:
            break
        gone = _restore(raw)
        left.append(Left(gone, why))
        del table[key]
        index.first += 1
        index.records -= len(gone)
    _save(table, model, index)
    return left


def take(table: Table, model: str) -> list[list[TrainingRecord]]:
    """Every held message's records of ``model``, oldest first; nothing is held after."""
    index = _index(table, model)
    out = []
    for n in range(index.first, index.next):
        key = _entry_key(model, n)
        out.append(_restore(table[key]))
        del table[key]
    if _index_key(model) in table:
        del table[_index_key(model)]
    return out


def _save(table: Table, model: str, index: _Index) -> None:
    if index.first == index.next:
        if _index_key(model) in table:
            del table[_index_key(model)]
        return
    table[_index_key(model)] = orjson.dumps(asdict(index))
