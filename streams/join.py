"""Join predictions with their delayed labels by request id, in either order.

Two layers:

* the durable log, in a key-value store (the KPI agent's Faust table; a dict
  in tests and replays). Each call writes *one* chunk key for the entries it
  adds and one small deletion key per time bucket whose entries it joined,
  never one key per request: a Faust table sends every key write to its
  changelog as a Kafka message of its own, through a buffer that drains a
  few thousand messages a second, far below a label feed's rate. Keys:

  - ``m|model|`` -> the model clock and its open buckets (``ModelClock``);
  - ``x|model|kind|bucket|seq`` -> ``{request_id: value}`` added by one call
    (kind ``p``: predictions waiting for a label; ``l``: labels that came first);
  - ``d|model|kind|bucket|seq`` -> request ids of that bucket joined by one call.

* the working set, in memory: request id -> (bucket, value) per model and
  kind, rebuilt from the log the first time a model is seen (after a restart
  or a rebalance, call :meth:`LabelJoin.forget`).

Expiry runs on *event time*, so a replay expires the same entries, and on
the clock of the *other* input, as a join of two streams must: a prediction
has waited ``ttl`` for its label when the label feed (its largest ``ts``) has
moved ``ttl`` past it, however far ahead the predictions run; likewise an
early label waits on the predictions' clock. So a label feed that is consumed
late (a lagging consumer, a replay) loses nothing. In case one input stalls
for good, an entry also expires once its own input's clock is ``2 x ttl``
past it: memory stays bounded. An entry added in bucket ``b`` (of
``bucket_ms``) expires when the clock passes ``b + bucket_ms + ttl_ms``
(between ``ttl`` and ``ttl + bucket`` after its time). Expired predictions are
handed back (the caller counts them as never labeled) and expired labels are
counted as orphans: nothing leaves silently.

Bounds: entries younger than the TTL, i.e. about ``rate x (ttl + bucket)``
pending predictions (and early labels); each costs its value's JSON plus
about 250 bytes in memory (about 500 bytes with the simulator's values;
``driftline bench --labels`` measures it), and the JSON again in the store. Keys: per
open bucket one chunk per call that added to it and one deletion record per
call that joined from it; ``ttl / bucket + 1`` open buckets per model and
kind. A second label for a joined request finds no prediction and ends as an
orphan; a repeated prediction (or early label) is counted and ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

import orjson

Store = MutableMapping[bytes, bytes]
SEP = b"|"
PREDICTION, LABEL = "p", "l"


class ModelClock(TypedDict):
    predictions_ms: int | None  # largest prediction ts seen
    labels_ms: int | None  # largest label ts seen
    #: kind -> bucket start (str) -> [chunks written, deletion records written]
    buckets: dict[str, dict[str, list[int]]]
    orphan_labels: int
    duplicates: int


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


def _compact(value: Any) -> bytes:
    """JSON bytes that own only their length: ``orjson.dumps`` returns bytes that keep
    a 4 KB buffer (measured with tracemalloc), 40 times what a pending entry needs."""
    return bytes(memoryview(orjson.dumps(value)))


def _key(*parts: str) -> bytes:
    return SEP.join(p.encode() for p in parts)


# kind -> request id -> (bucket, value as JSON bytes: a third of a dict's memory)
Index = dict[str, dict[str, tuple[int, bytes]]]


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
    >>> j.add_labels(store, "m", [("r9", 11_001, 0)]).expired  # by the labels' clock
    [{'y': 0}]
    >>> j.add_predictions(store, "m", [("r8", 22_002, {})]).orphans_expired  # zz and r9
    2
    """

    def __init__(self, *, ttl_ms: int, bucket_ms: int) -> None:
        if ttl_ms <= 0 or bucket_ms <= 0:
            raise ValueError("ttl_ms and bucket_ms must be positive")
        self.ttl_ms = ttl_ms
        self.bucket_ms = bucket_ms
        self._index: dict[str, Index] = {}  # model -> working set (a cache of the store)

    def forget(self) -> None:
        """Drop the working sets; they are rebuilt from the store on next use."""
        self._index.clear()

    # -- model clock, log and working set ---------------------------------------

    @staticmethod
    def clock(store: Store, model: str) -> ModelClock:
        raw = store.get(_key("m", model, ""))
        if raw is None:
            return {"predictions_ms": None, "labels_ms": None,
                    "buckets": {PREDICTION: {}, LABEL: {}},
                    "orphan_labels": 0, "duplicates": 0}
        loaded: ModelClock = orjson.loads(raw)
        return loaded

    def pending(self, store: Store, model: str) -> tuple[int, int]:
        """(predictions waiting for a label, labels waiting for a prediction)."""
        index = self._working_set(store, model)
        return len(index[PREDICTION]), len(index[LABEL])

    def _working_set(self, store: Store, model: str) -> Index:
        if model in self._index:
            return self._index[model]
        index: Index = {PREDICTION: {}, LABEL: {}}
        clock = self.clock(store, model)
        for kind, buckets in clock["buckets"].items():
            for bucket_s, (chunks, deletions) in buckets.items():
                entries: dict[str, Any] = {}
                for seq in range(chunks):
                    entries.update(orjson.loads(store.get(_key("x", model, kind, bucket_s,
                                                               str(seq)), b"{}")))
                for seq in range(deletions):
                    for request_id in orjson.loads(store.get(_key("d", model, kind, bucket_s,
                                                                  str(seq)), b"[]")):
                        entries.pop(request_id, None)
                bucket = int(bucket_s)
                for request_id, value in entries.items():
                    index[kind].setdefault(request_id, (bucket, _compact(value)))
        self._index[model] = index
        return index

    def _bucket(self, ts_ms: int) -> int:
        return ts_ms - ts_ms % self.bucket_ms

    def _log_added(self, store: Store, model: str, clock: ModelClock, kind: str,
                   added: dict[int, list[tuple[str, bytes]]]) -> None:
        buckets = clock["buckets"][kind]
        for bucket, entries in added.items():
            counts = buckets.setdefault(str(bucket), [0, 0])
            chunk = b"{" + b",".join(orjson.dumps(r) + b":" + v for r, v in entries) + b"}"
            store[_key("x", model, kind, str(bucket), str(counts[0]))] = chunk
            counts[0] += 1

    def _log_joined(self, store: Store, model: str, clock: ModelClock, kind: str,
                    joined: dict[int, list[str]]) -> None:
        buckets = clock["buckets"][kind]
        for bucket, ids in joined.items():
            counts = buckets[str(bucket)]
            store[_key("d", model, kind, str(bucket), str(counts[1]))] = orjson.dumps(ids)
            counts[1] += 1

    def _limit(self, clock: ModelClock, kind: str) -> int | None:
        """Buckets of ``kind`` older than this have expired."""
        own, other = ((clock["predictions_ms"], clock["labels_ms"]) if kind == PREDICTION
                      else (clock["labels_ms"], clock["predictions_ms"]))
        limits = [t - self.ttl_ms - self.bucket_ms for t in (other,) if t is not None]
        limits += [t - 2 * self.ttl_ms - self.bucket_ms for t in (own,) if t is not None]
        return max(limits, default=None)

    def _advance(self, store: Store, model: str, clock: ModelClock, index: Index,
                 field_name: str, ts: Iterable[int], out: JoinOutcome) -> None:
        high = max(ts, default=None)
        if high is None:
            return
        now = clock[field_name]  # type: ignore[literal-required]
        clock[field_name] = high if now is None else max(now, high)  # type: ignore[literal-required]
        for kind in (PREDICTION, LABEL):
            limit = self._limit(clock, kind)
            if limit is None:
                continue
            buckets = clock["buckets"][kind]
            for bucket_s in sorted((b for b in buckets if int(b) < limit), key=int):
                chunks, deletions = buckets.pop(bucket_s)
                bucket = int(bucket_s)
                live = index[kind]
                for seq in range(chunks):
                    chunk = orjson.loads(store.pop(_key("x", model, kind, bucket_s, str(seq)),
                                                   b"{}"))
                    for request_id in chunk:
                        entry = live.get(request_id)
                        if entry is None or entry[0] != bucket:
                            continue  # joined meanwhile
                        del live[request_id]
                        if kind == PREDICTION:
                            out.expired.append(orjson.loads(entry[1]))
                        else:
                            out.orphans_expired += 1
                for seq in range(deletions):
                    store.pop(_key("d", model, kind, bucket_s, str(seq)), None)
        clock["orphan_labels"] += out.orphans_expired

    # -- the two inputs ------------------------------------------------------------

    def add_predictions(
        self, store: Store, model: str, predictions: list[tuple[str, int, dict[str, Any]]]
    ) -> JoinOutcome:
        """``(request_id, ts_ms, value)`` per prediction; ``value`` is kept (JSON) until
        its label comes. Returns the predictions whose label was already waiting."""
        out = JoinOutcome()
        clock = self.clock(store, model)
        index = self._working_set(store, model)
        waiting, early = index[PREDICTION], index[LABEL]
        added: dict[int, list[tuple[str, bytes]]] = {}
        joined: dict[int, list[str]] = {}
        for request_id, ts_ms, value in predictions:
            if request_id in waiting:
                clock["duplicates"] += 1
                continue
            label = early.pop(request_id, None)
            if label is not None:
                first = orjson.loads(label[1])
                out.matches.append(Match(value, first["y"], first["t"]))
                joined.setdefault(label[0], []).append(request_id)
                continue
            bucket = self._bucket(ts_ms)
            raw = _compact(value)
            waiting[request_id] = (bucket, raw)
            added.setdefault(bucket, []).append((request_id, raw))
        self._log_added(store, model, clock, PREDICTION, added)
        self._log_joined(store, model, clock, LABEL, joined)
        self._advance(store, model, clock, index, "predictions_ms",
                      (t for _, t, _ in predictions), out)
        store[_key("m", model, "")] = orjson.dumps(clock)
        return out

    def add_labels(
        self, store: Store, model: str, labels: list[tuple[str, int, Any]]
    ) -> JoinOutcome:
        """``(request_id, ts_ms, label)`` per label. Returns the completed predictions;
        labels without a prediction yet wait for it (up to the TTL)."""
        out = JoinOutcome()
        clock = self.clock(store, model)
        index = self._working_set(store, model)
        waiting, early = index[PREDICTION], index[LABEL]
        added: dict[int, list[tuple[str, bytes]]] = {}
        joined: dict[int, list[str]] = {}
        for request_id, ts_ms, label in labels:
            prediction = waiting.pop(request_id, None)
            if prediction is not None:
                out.matches.append(Match(orjson.loads(prediction[1]), label, ts_ms))
                joined.setdefault(prediction[0], []).append(request_id)
                continue
            if request_id in early:
                clock["duplicates"] += 1
                continue
            bucket = self._bucket(ts_ms)
            raw = _compact({"y": label, "t": ts_ms})
            early[request_id] = (bucket, raw)
            added.setdefault(bucket, []).append((request_id, raw))
        self._log_added(store, model, clock, LABEL, added)
        self._log_joined(store, model, clock, PREDICTION, joined)
        self._advance(store, model, clock, index, "labels_ms", (t for _, t, _ in labels), out)
        store[_key("m", model, "")] = orjson.dumps(clock)
        return out
