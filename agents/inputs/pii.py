"""Pseudonymising the fields the policy names as PII, before anything keeps them.

``pii: [customer_email, device_id]`` in the policy names features (and
segment keys) whose values are personal data. The codec replaces each such
value, right after validation and before any handler sees it, with
``"pii:" + HMAC-SHA256(key, value)`` (16 hex characters): the same person
keeps the same token, so drift on the field's distribution and KPI slices by
it still work, but no window state, table, report, metric or log holds the
value. The key is the command signing key (agents.controller.keys): a plain hash of a
phone number or an e-mail address could be reversed by trying them all.

One place still holds the original: a DeadLetter's ``raw`` bytes (and its
``event``) for an event that could not be read, so that nothing is lost; it
lives on ``deadletter``, which needs the access rules of the input topics.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any


class Pseudonymizer:
    def __init__(self, names: Iterable[str], key: bytes) -> None:
        self.names = frozenset(names)
        self._key = key

    def __bool__(self) -> bool:
        return bool(self.names)

    def token(self, value: Any) -> Any:
        if value is None:
            return None
        digest = hmac.new(self._key, str(value).encode(), hashlib.sha256).hexdigest()
        return f"pii:{digest[:16]}"

    def apply_records(self, records: list[dict[str, Any]]) -> None:
        """Training-data records (``reference build``): flat columns or nested features."""
        for record in records:
            for name in self.names.intersection(record):
                record[name] = self.token(record[name])
        self.apply(records)

    def apply(self, rows: list[dict[str, Any]]) -> None:
        """Replace the named features and segment values of ``rows`` in place."""
        for row in rows:
            for part in ("features", "segment"):
                values = row.get(part)
                if values:
                    hit = self.names.intersection(values)
                    if hit:
                        row[part] = {k: self.token(v) if k in hit else v
                                     for k, v in values.items()}
