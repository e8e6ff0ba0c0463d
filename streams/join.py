"""Join predictions with their delayed labels by request id, in either order.

The state lives in a key-value store (the KPI agent's Faust table; a dict in
tests and replays), so a persistent table store keeps it on disk. Keys:

* ``p|model|request_id`` -> a prediction waiting for its label (``Pending``);
* ``l|model|request_id`` -> a label that arrived before its prediction;
* ``x|model|kind|bucket|seq`` -> the request ids one message added to a time
  bucket, so that expiry finds them without scanning the store or keeping an
  index in memory.

Expiry runs on *event time*: the model's clock is the largest ``ts`` seen on
its predictions and labels, so a replay expires the same entries. An entry
added in bucket ``b`` (of ``bucket_ms``) expires once the clock passes
``b + bucket_ms + ttl_ms``: between ``ttl`` and ``ttl + bucket`` after its
time. Expired predictions are handed back (the caller counts them as never
labeled in their window) and expired labels are counted as orphans: nothing
leaves the store silently.

Bounds: one pending entry per prediction (or early label) younger than the
TTL; ``ttl / bucket + 1`` open buckets per model and kind, each with one
chunk key per message that added to it. A second label for an already-joined
request finds no prediction and ends as an orphan; a second prediction with a
pending request id is counted as a duplicate and ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

import orjson

Store = MutableMapping[bytes, bytes]
SEP = b"|"


class ModelClock(TypedDict):
    clock_ms: int | None
    #: kind ("p" or "l") -> bucket start (str) -> chunks written to it
    buckets: dict[str, dict[str, int]]
    orphan_labels: int
    duplicate_predictions: int


@dataclass
class Match:
    """A prediction (as stored by the caller) and the label that completes it."""

    prediction: dict[str, Any]
    label: Any
    label_ts_ms: int


@dataclass
class JoinOutcome:
    matches: list[Match] = field(default_factory=list)
    #: predictions whose TTL ran out unlabeled (their stored values)
    expired: list[dict[str, Any]] = field(default_factory=list)
    orphans_expired: int = 0


def _key(kind: bytes, model: str, request_id: str) -> bytes:
    return SEP.join((kind, model.encode(), request_id.encode()))


class LabelJoin:
    """Bucketed, event-time TTL join over a byte store.

    >>> store: dict[bytes, bytes] = {}
    >>> j = LabelJoin(ttl_ms=10_000, bucket_ms=1_000)
    >>> j.add_predictions(store, "m", [("r1", 0, {"y": 1}), ("r2", 0, {"y": 0})]).matches
    []
    >>> [(m.prediction, m.label) for m in j.add_labels(store, "m", [("r1", 5_000, 1)]).matches]
    [({'y': 1}, 1)]
    >>> j.add_labels(store, "m", [("zz", 11_000, 0)]).expired  # bucket 0 lives to 11 s
    []
    >>> j.add_labels(store, "m", [("r9", 11_001, 0)]).expired
    [{'y': 0}]
    >>> j.add_labels(store, "m", [("r8", 22_002, 0)]).orphans_expired  # zz and r9
    2
    """

    def __init__(self, *, ttl_ms: int, bucket_ms: int) -> None:
        if ttl_ms <= 0 or bucket_ms <= 0:
            raise ValueError("ttl_ms and bucket_ms must be positive")
        self.ttl_ms = ttl_ms
        self.bucket_ms = bucket_ms

    # -- model clock and buckets --------------------------------------------

    @staticmethod
    def clock(store: Store, model: str) -> ModelClock:
        raw = store.get(_key(b"m", model, ""))
        if raw is None:
            return {"clock_ms": None, "buckets": {"p": {}, "l": {}},
                    "orphan_labels": 0, "duplicate_predictions": 0}
        loaded: ModelClock = orjson.loads(raw)
        return loaded

    @staticmethod
    def _save_clock(store: Store, model: str, clock: ModelClock) -> None:
        store[_key(b"m", model, "")] = orjson.dumps(clock)

    def _remember(
        self, store: Store, model: str, clock: ModelClock, kind: str, items: list[tuple[str, int]]
    ) -> None:
        """Write the request ids of this call into chunk keys of their time buckets."""
        by_bucket: dict[int, list[str]] = {}
        for request_id, ts_ms in items:
            by_bucket.setdefault(ts_ms - ts_ms % self.bucket_ms, []).append(request_id)
        buckets = clock["buckets"][kind]
        for bucket, ids in by_bucket.items():
            seq = buckets.get(str(bucket), 0)
            store[self._chunk_key(model, kind, bucket, seq)] = orjson.dumps(ids)
            buckets[str(bucket)] = seq + 1

    @staticmethod
    def _chunk_key(model: str, kind: str, bucket: int, seq: int) -> bytes:
        return SEP.join((b"x", model.encode(), kind.encode(), str(bucket).encode(),
                         str(seq).encode()))

    def _advance(self, store: Store, model: str, clock: ModelClock, ts: Iterable[int],
                 out: JoinOutcome) -> None:
        high = max(ts, default=None)
        if high is None:
            return
        now = clock["clock_ms"]
        clock["clock_ms"] = high if now is None else max(now, high)
        limit = clock["clock_ms"] - self.ttl_ms - self.bucket_ms
        for kind, prefix in (("p", b"p"), ("l", b"l")):
            buckets = clock["buckets"][kind]
            for bucket in sorted((b for b in buckets if int(b) < limit), key=int):
                for seq in range(buckets.pop(bucket)):
                    chunk = self._chunk_key(model, kind, int(bucket), seq)
                    ids: list[str] = orjson.loads(store.pop(chunk, b"[]"))
                    for request_id in ids:
                        raw = store.pop(_key(prefix, model, request_id), None)
                        if raw is None:
                            continue  # joined meanwhile
                        if kind == "p":
                            out.expired.append(orjson.loads(raw))
                        else:
                            out.orphans_expired += 1
        clock["orphan_labels"] += out.orphans_expired

    # -- the two inputs -------------------------------------------------------

    def add_predictions(
        self, store: Store, model: str, predictions: list[tuple[str, int, dict[str, Any]]]
    ) -> JoinOutcome:
        """``(request_id, ts_ms, value)`` per prediction; ``value`` is stored as JSON
        until the label comes. Returns the predictions whose label was already waiting."""
        out = JoinOutcome()
        clock = self.clock(store, model)
        waiting: list[tuple[str, int]] = []
        for request_id, ts_ms, value in predictions:
            pkey = _key(b"p", model, request_id)
            if pkey in store:
                clock["duplicate_predictions"] += 1
                continue
            early = store.pop(_key(b"l", model, request_id), None)
            if early is not None:
                label = orjson.loads(early)
                out.matches.append(Match(value, label["y"], label["t"]))
                continue
            store[pkey] = orjson.dumps(value)
            waiting.append((request_id, ts_ms))
        self._remember(store, model, clock, "p", waiting)
        self._advance(store, model, clock, (t for _, t, _ in predictions), out)
        self._save_clock(store, model, clock)
        return out

    def add_labels(
        self, store: Store, model: str, labels: list[tuple[str, int, Any]]
    ) -> JoinOutcome:
        """``(request_id, ts_ms, label)`` per label. Returns the completed predictions;
        labels without a prediction yet wait for it (up to the TTL)."""
        out = JoinOutcome()
        clock = self.clock(store, model)
        waiting: list[tuple[str, int]] = []
        for request_id, ts_ms, label in labels:
            raw = store.pop(_key(b"p", model, request_id), None)
            if raw is not None:
                out.matches.append(Match(orjson.loads(raw), label, ts_ms))
                continue
            lkey = _key(b"l", model, request_id)
            if lkey not in store:
                waiting.append((request_id, ts_ms))
            store[lkey] = orjson.dumps({"y": label, "t": ts_ms})  # the latest label wins
        self._remember(store, model, clock, "l", waiting)
        self._advance(store, model, clock, (t for _, t, _ in labels), out)
        self._save_clock(store, model, clock)
        return out
