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
  or a rebalance, call :meth:`LabelJoin.forget`), and how many of its entries
  each bucket holds. A bucket that expires with none waiting (all joined: the
  usual case) is dropped without reading its chunks back; one with a few
  waiting finds them in the working set (``scan_factor``); only one with many
  waiting decodes its chunks.

Labels come as columns (:meth:`LabelJoin.add_label_columns`): their
predictions are taken out of the working set with one ``map`` over the ids
and decoded in one call, and a call's ids are grouped by bucket without a
Python step per label when all of them were waiting.

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
kind, and as many counts in memory. A second label for a joined request finds
no prediction and ends as an orphan; a repeated prediction (or early label) is
counted and ignored.

**Lanes** (shadow deployments). A shadow version answers the champion's requests
unserved, so one request id has two predictions, and its one label completes
both. The caller gives such a prediction a *lane*: its key is
``request_id + LANE + lane`` (:func:`lane_key`), so it waits beside the served
prediction instead of counting as its duplicate. A label looks up the plain key
and then each lane seen (a second ``map`` over the ids per lane, paid only by
models that ever had a lane prediction), and completes every prediction it
finds; when it finds the plain one and a lane one of the same request,
``JoinOutcome.pairs`` says so (indices into ``predictions``). A lane prediction
arriving while the plain one of its request waits (or the other way round) is
an *arrival pair* (``JoinOutcome.arrivals``): the two values side by side,
before any label, from the working set alone, so pairs cost no state of their
own and are bounded as the pending predictions are. Arrival order does not
matter; a request whose first prediction was already labeled when the second
came is not paired (labels normally come long after both). An early label
(label first) completes the first prediction of its request that arrives, in
whichever lane: the other then waits and expires unlabeled (counted).
Non-lane traffic stores, returns and costs exactly what it did.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import itemgetter
from typing import Any, NotRequired, TypedDict, cast

import orjson

Store = MutableMapping[bytes, bytes]
SEP = b"|"
PREDICTION, LABEL = "p", "l"
#: between a request id and its lane in a lane prediction's key (``lane_key``)
LANE = "\x1f"


def lane_key(request_id: str, lane: str) -> str:
    """The join key of a prediction in ``lane`` (e.g. a shadow's answer).

    >>> lane_key("r1", "shadow")
    'r1\\x1fshadow'
    """
    return f"{request_id}{LANE}{lane}"


class ModelClock(TypedDict):
    predictions_ms: int | None  # largest prediction ts seen
    labels_ms: int | None  # largest label ts seen
    #: kind -> bucket start (str) -> [chunks written, deletion records written]
    buckets: dict[str, dict[str, list[int]]]
    orphan_labels: int
    duplicates: int
    #: lane -> its latest prediction's ts (ms); absent until a lane prediction comes, and
    #: a lane is dropped once the predictions' clock is ``2 x ttl + bucket`` past it
    lanes: NotRequired[dict[str, int]]


@dataclass
class Match:
    """A prediction (as stored by the caller) and the label that completes it."""

    prediction: dict[str, Any]
    label: Any
    label_ts_ms: int


@dataclass
class JoinOutcome:
    """What a call joined, as columns in arrival order (``matches`` row by row): the
    completed predictions' stored values, their labels and the labels' times."""

    predictions: list[dict[str, Any]] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)
    label_ts_ms: list[int] = field(default_factory=list)
    #: predictions whose TTL ran out unlabeled (their stored values)
    expired: list[dict[str, Any]] = field(default_factory=list)
    orphans_expired: int = 0
    #: (plain, lane) indices into ``predictions``: one request's served prediction and
    #: a lane's answer, completed by the same label
    pairs: list[tuple[int, int]] = field(default_factory=list)
    #: (plain value, lane value): one request's two predictions, met on arrival
    arrivals: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    #: (index into ``predictions``, the value of its request's other prediction, which
    #: the same label completed earlier): pairs completed one after the other
    late_pairs: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    @property
    def matches(self) -> list[Match]:
        return [
            Match(p, y, t)
            for p, y, t in zip(self.predictions, self.labels, self.label_ts_ms, strict=True)
        ]


def _compact(value: Any) -> bytes:
    """JSON bytes that own only their length: ``orjson.dumps`` returns bytes that keep
    a 4 KB buffer (measured with tracemalloc), 40 times what a pending entry needs."""
    return bytes(memoryview(orjson.dumps(value)))


def _key(*parts: str) -> bytes:
    return SEP.join(p.encode() for p in parts)


# kind -> request id -> (bucket, value as JSON bytes: a third of a dict's memory)
Index = dict[str, dict[str, tuple[int, bytes]]]
# kind -> bucket -> how many of the working set's entries are in that bucket
Live = dict[str, dict[int, int]]


def _with_other(label: bytes, value: bytes) -> bytes:
    """A stored label (``{"y": .., "t": ..}``) with the prediction it completed as ``q``."""
    return label[:-1] + b',"q":' + value + b"}"


def _loads_all(raws: list[bytes]) -> list[Any]:
    """Many JSON values decoded in one call (as ``[orjson.loads(r) for r in raws]``)."""
    return orjson.loads(b"[" + b",".join(raws) + b"]") if raws else []


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

    #: an expiring bucket's waiting entries are looked up in the working set (not decoded
    #: from its chunks) while the working set holds at most this many times as many
    scan_factor = 10

    def __init__(self, *, ttl_ms: int, bucket_ms: int) -> None:
        if ttl_ms <= 0 or bucket_ms <= 0:
            raise ValueError("ttl_ms and bucket_ms must be positive")
        self.ttl_ms = ttl_ms
        self.bucket_ms = bucket_ms
        self._index: dict[str, Index] = {}  # model -> working set (a cache of the store)
        #: model -> its working set's entries per bucket: a bucket that expires with none
        #: left (all joined, the usual case) is dropped without reading its chunks back
        self._live: dict[str, Live] = {}

    def forget(self) -> None:
        """Drop the working sets; they are rebuilt from the store on next use."""
        self._index.clear()
        self._live.clear()

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
        live: Live = {PREDICTION: {}, LABEL: {}}
        for kind, entries in index.items():
            for bucket, _ in entries.values():
                live[kind][bucket] = live[kind].get(bucket, 0) + 1
        self._index[model] = index
        self._live[model] = live
        return index

    def _bucket(self, ts_ms: int) -> int:
        return ts_ms - ts_ms % self.bucket_ms

    def _log_added(self, store: Store, model: str, clock: ModelClock, kind: str,
                   added: dict[int, list[tuple[str, bytes]]]) -> None:
        buckets = clock["buckets"][kind]
        live = self._live[model][kind]
        for bucket, entries in added.items():
            live[bucket] = live.get(bucket, 0) + len(entries)
            counts = buckets.setdefault(str(bucket), [0, 0])
            chunk = b"{" + b",".join(orjson.dumps(r) + b":" + v for r, v in entries) + b"}"
            store[_key("x", model, kind, str(bucket), str(counts[0]))] = chunk
            counts[0] += 1

    def _log_joined(self, store: Store, model: str, clock: ModelClock, kind: str,
                    joined: dict[int, list[str]]) -> None:
        buckets = clock["buckets"][kind]
        live = self._live[model][kind]
        for bucket, ids in joined.items():
            live[bucket] -= len(ids)
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

    def _retire_lanes(self, clock: ModelClock) -> None:
        """Lanes whose last prediction has surely expired (by its own input's clock):
        their labels are no longer looked up, nor copied for them."""
        seen, now = clock.get("lanes"), clock["predictions_ms"]
        if not seen or now is None:
            return
        for lane, last in list(seen.items()):
            if now > last + 2 * self.ttl_ms + self.bucket_ms:
                del seen[lane]
        if not seen:
            del clock["lanes"]

    def _advance(self, store: Store, model: str, clock: ModelClock, index: Index,
                 field_name: str, ts: Iterable[int], out: JoinOutcome) -> None:
        high = max(ts, default=None)
        counts = self._live[model]
        if high is None:
            return
        now = clock[field_name]  # type: ignore[literal-required]
        clock[field_name] = high if now is None else max(now, high)  # type: ignore[literal-required]
        self._retire_lanes(clock)
        for kind in (PREDICTION, LABEL):
            limit = self._limit(clock, kind)
            if limit is None:
                continue
            buckets = clock["buckets"][kind]
            for bucket_s in sorted((b for b in buckets if int(b) < limit), key=int):
                chunks, deletions = buckets.pop(bucket_s)
                bucket = int(bucket_s)
                live = index[kind]
                left = counts[kind].pop(bucket, 0)
                # The bucket's entries still waiting: none (all joined, the usual case), or
                # found in the working set when it is small beside them (reading a scan's
                # entry costs a tenth of decoding one from a chunk), else in the chunks.
                scan = left > 0 and len(live) <= self.scan_factor * left
                chunk_ids: list[str] = []
                for seq in range(chunks):
                    raw = store.pop(_key("x", model, kind, bucket_s, str(seq)), b"{}")
                    if left and not scan:
                        chunk_ids.extend(orjson.loads(raw))
                ids = [r for r, e in live.items() if e[0] == bucket] if scan else chunk_ids
                for request_id in ids:
                    entry = live.get(request_id)
                    if entry is None or entry[0] != bucket:
                        continue  # joined meanwhile
                    del live[request_id]
                    if kind == PREDICTION:
                        out.expired.append(orjson.loads(entry[1]))
                    elif LANE not in request_id:  # a lane's copy is no orphan (_echo)
                        out.orphans_expired += 1
                for seq in range(deletions):
                    store.pop(_key("d", model, kind, bucket_s, str(seq)), None)
        clock["orphan_labels"] += out.orphans_expired

    @staticmethod
    def _echo(early: dict[str, tuple[int, bytes]], echoes: dict[int, list[tuple[str, bytes]]],
              label: tuple[int, bytes], request_id: str, plain: str | None,
              lanes: list[str], used: str | None, value: dict[str, Any]) -> None:
        """A label that completed ``value``, one of its request's predictions, kept for
        the others (``plain``: "" when the served one may still come; the ``lanes`` but
        ``used``), with ``value`` to pair them with (``q``). A copy that no prediction
        takes expires uncounted: it is no orphan."""
        sides = ([] if plain is None else [plain]) + [x for x in lanes if x != used]
        copy = (label[0], _with_other(label[1], _compact(value)))
        for side in sides:
            key = lane_key(request_id, side)
            if key not in early:
                early[key] = copy
                echoes.setdefault(copy[0], []).append((key, copy[1]))

    @staticmethod
    def _lane_matches(
        request_ids: list[str], ts_ms: list[int], labels: list[Any],
        entries: list[tuple[int, bytes] | None],
        in_lanes: list[tuple[str, list[tuple[int, bytes] | None]]],
        found: list[bytes], joined: dict[int, list[str]], out: JoinOutcome,
    ) -> None:
        """The lanes' predictions the labels completed, after the plain ones (whose
        order stays as without lanes), and the pairs among them."""
        plain_at: dict[int, int] = {}
        at = 0
        for i, entry in enumerate(entries):
            if entry is not None:
                plain_at[i] = at
                at += 1
        for lane, got in in_lanes:
            for i, entry in enumerate(got):
                if entry is None:
                    continue
                if i in plain_at:
                    out.pairs.append((plain_at[i], len(found)))
                found.append(entry[1])
                out.labels.append(labels[i])
                out.label_ts_ms.append(ts_ms[i])
                joined.setdefault(entry[0], []).append(lane_key(request_ids[i], lane))

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
        seen = clock.get("lanes", {})
        lanes = sorted(seen)
        echoes: dict[int, list[tuple[str, bytes]]] = {}  # label copies for the other lanes
        for request_id, ts_ms, value in predictions:
            if request_id in waiting:
                clock["duplicates"] += 1
                continue
            key = request_id  # where the label that completes it waited
            if LANE in request_id:
                plain, lane = request_id.split(LANE, 1)
                if lane not in seen:
                    lanes.append(lane)
                    lanes.sort()
                seen[lane] = max(seen.get(lane, ts_ms), ts_ms)
                clock["lanes"] = seen
                other = waiting.get(plain)
                if other is not None:
                    out.arrivals.append((orjson.loads(other[1]), value))
                label = early.pop(request_id, None)  # a copy left for this lane
                if label is None:
                    label = early.pop(plain, None)  # the label came first of all
                    key = plain
                    if label is not None:
                        self._echo(early, echoes, label, plain, "", lanes, lane, value)
            else:
                for lane in lanes:
                    other = waiting.get(lane_key(request_id, lane))
                    if other is not None:
                        out.arrivals.append((value, orjson.loads(other[1])))
                label = early.pop(request_id, None)
                if label is not None and lanes:  # the label came first of all
                    self._echo(early, echoes, label, request_id, None, lanes, None, value)
                elif label is None and lanes:  # a copy left for the served prediction
                    key = lane_key(request_id, "")
                    label = early.pop(key, None)
            if label is not None:
                first = orjson.loads(label[1])
                other = first.get("q")  # a copy: the prediction that took the label first
                if other is not None:
                    out.late_pairs.append((len(out.predictions), other))
                    out.arrivals.append((value, other) if key == lane_key(request_id, "")
                                        else (other, value))
                out.predictions.append(value)
                out.labels.append(first["y"])
                out.label_ts_ms.append(first["t"])
                joined.setdefault(label[0], []).append(key)
                continue
            bucket = self._bucket(ts_ms)
            raw = _compact(value)
            waiting[request_id] = (bucket, raw)
            added.setdefault(bucket, []).append((request_id, raw))
        self._log_added(store, model, clock, LABEL, echoes)
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
        ids = [r for r, _, _ in labels]
        return self.add_label_columns(
            store, model, ids, [t for _, t, _ in labels], [y for _, _, y in labels]
        )

    def add_label_columns(
        self, store: Store, model: str, request_ids: list[str], ts_ms: list[int],
        labels: list[Any],
    ) -> JoinOutcome:
        """``add_labels`` with the labels as three columns of equal length."""
        out = JoinOutcome()
        clock = self.clock(store, model)
        index = self._working_set(store, model)
        waiting, early = index[PREDICTION], index[LABEL]
        added: dict[int, list[tuple[str, bytes]]] = {}
        joined: dict[int, list[str]] = {}
        # every label's prediction taken out at once (at C speed): None where there is none
        entries = list(map(waiting.pop, request_ids, repeat(None)))
        # and each lane's (shadows): only for models that had lane predictions
        in_lanes = [
            (lane, list(map(waiting.pop, [lane_key(r, lane) for r in request_ids],
                            repeat(None))))
            for lane in sorted(clock.get("lanes", {}))
        ]
        in_lanes = [(lane, got) for lane, got in in_lanes if any(e is not None for e in got)]
        laned = {i for _, got in in_lanes for i, e in enumerate(got) if e is not None}
        if entries and None not in entries:  # all of them waiting: the usual case
            present = cast(list[tuple[int, bytes]], entries)
            found = list(map(itemgetter(1), present))
            out.labels, out.label_ts_ms = list(labels), list(ts_ms)
            buckets = list(map(itemgetter(0), present))
            if buckets.count(buckets[0]) == len(buckets):
                joined[buckets[0]] = list(request_ids)
            else:  # each bucket's ids in arrival order, the buckets in order of first use
                for bucket in dict.fromkeys(buckets):
                    joined[bucket] = list(compress(request_ids, [b == bucket for b in buckets]))
        else:
            found = []
            for i, (request_id, prediction) in enumerate(zip(request_ids, entries, strict=True)):
                if prediction is not None:
                    found.append(prediction[1])
                    out.labels.append(labels[i])
                    out.label_ts_ms.append(ts_ms[i])
                    joined.setdefault(prediction[0], []).append(request_id)
                    continue
                if i in laned:  # only a lane's prediction waited: not an early label
                    continue
                if request_id in early:
                    clock["duplicates"] += 1
                    continue
                bucket = self._bucket(ts_ms[i])
                raw = _compact({"y": labels[i], "t": ts_ms[i]})
                early[request_id] = (bucket, raw)
                added.setdefault(bucket, []).append((request_id, raw))
        if in_lanes:
            self._lane_matches(request_ids, ts_ms, labels, entries, in_lanes, found, joined, out)
        lanes = sorted(clock.get("lanes", {}))
        if lanes:  # copies of the labels for the predictions of their requests still to come
            took = dict(in_lanes)
            for i, request_id in enumerate(request_ids):
                used = [x for x in lanes if x in took and took[x][i] is not None]
                if entries[i] is None and not used:
                    continue  # waits as an early label, or a duplicate
                sides = [x for x in lanes if x not in used]
                if entries[i] is None:
                    sides.insert(0, "")  # the served prediction is still to come
                if not sides:
                    continue  # all of the request's predictions were here: the usual case
                got = entries[i] if entries[i] is not None else took[used[0]][i]
                assert got is not None
                label = (self._bucket(ts_ms[i]), _with_other(
                    _compact({"y": labels[i], "t": ts_ms[i]}), got[1]))
                for side in sides:
                    key = lane_key(request_id, side)
                    if key not in early:
                        early[key] = label
                        added.setdefault(label[0], []).append((key, label[1]))
        out.predictions = _loads_all(found)
        self._log_added(store, model, clock, LABEL, added)
        self._log_joined(store, model, clock, PREDICTION, joined)
        self._advance(store, model, clock, index, "labels_ms", ts_ms, out)
        store[_key("m", model, "")] = orjson.dumps(clock)
        return out
