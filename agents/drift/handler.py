"""Turn one input message into drift state updates, reports and dead letters.

Faust-free on purpose: the drift agent calls it with its table, and replay and
benchmarks call it with a plain dict, so everything runs the same code.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from functools import cached_property
from itertools import repeat
from operator import itemgetter
from typing import Any

from pydantic import ValidationError

from agents.config import DEFAULT_MAX_MODELS
from agents.drift.arrow_lane import ArrowLane
from agents.drift.columns import ColumnLane, Columns
from agents.inputs.admission import Admission
from agents.inputs.codec import MODEL, Codec, Origin, Row, dead_letter, keyed_events
from agents.inputs.future import FutureBound
from agents.inputs.pii import Pseudonymizer
from agents.runtime import state_codec
from agents.runtime.batch_cache import BatchStates
from agents.runtime.runner import Outcome
from schemas import arrow
from schemas.errors import explain
from schemas.events import FeatureEvent, PredictionEvent
from schemas.policy import Policy
from schemas.reference import ReferenceProfile
from streams.batch import FeatureBatch, concat, same_columns
from streams.drift import reference_switch
from streams.drift.monitor import DriftMonitor
from streams.drift.state import PREDICTION, SCORE, VersionState, reference_from_profile

logger = logging.getLogger(__name__)

#: FeatureEvents without a model_version are tracked under this version.
UNVERSIONED = "unversioned"
#: Table key suffix of a version's reference (the state's key is model@version).
REFERENCE_SUFFIX = b"#reference"
#: ... and of the reference it replaced, kept while windows counted on it are open.
PREVIOUS_SUFFIX = b"#previous"


class DriftHandler:
    """Decode, keep the admitted models' events (``agents.inputs.admission``), group by model
    version, fold into the state table, close windows."""

    AGENT = "drift"
    MAX_CACHED_REFERENCES = 1024

    def __init__(
        self,
        *,
        policy: Policy,
        predictions_topic: str,
        features_topic: str,
        max_message_bytes: int,
        references_topic: str = "references",
        pii_key: bytes = b"",
        max_models: int = DEFAULT_MAX_MODELS,
        max_future_ms: int = 3_600_000,
    ) -> None:
        self.references_topic = references_topic
        # Events too far ahead of their version's watermark are dead-lettered: one bad
        # client clock would close every open window (agents.inputs.future).
        self.future = FutureBound(max_future_ms=max_future_ms, agent=self.AGENT)
        self.policy = policy
        # Only admitted models get state, here and in the table (agents.inputs.admission).
        self.admission = Admission(agent=self.AGENT, max_models=max_models,
                                   listed=policy.models)
        self._codecs: dict[str, Codec[Any]] = {
            predictions_topic: Codec(
                PredictionEvent, max_message_bytes=max_message_bytes, agent=self.AGENT,
                pii=Pseudonymizer(policy.pii, pii_key)),
            features_topic: Codec(
                FeatureEvent, max_message_bytes=max_message_bytes, agent=self.AGENT,
                pii=Pseudonymizer(policy.pii, pii_key)),
        }
        # Regular batches skip the dicts (agents.drift.columns); same columns either way.
        self._lanes = {
            topic: ColumnLane(codec.model, max_message_bytes=max_message_bytes, pii=policy.pii)
            for topic, codec in self._codecs.items()}
        # Arrow messages whose columns can be counted as they are (agents.drift.arrow_lane).
        self._arrow_lanes = {
            topic: ArrowLane(codec.model, max_message_bytes=max_message_bytes, pii=policy.pii)
            for topic, codec in self._codecs.items()}
        self._monitors: dict[str, DriftMonitor] = {}  # per admitted model: configuration
        # Decoded references by table key: a cache of table contents (never the
        # state of record), bounded by MAX_CACHED_REFERENCES, rebuilt after a restart.
        self._references: dict[bytes, tuple[bytes, Any]] = {}

    def monitor(self, model: str) -> DriftMonitor:
        if model not in self._monitors:
            self._monitors[model] = DriftMonitor(policy=self.policy.drift_for(model))
        return self._monitors[model]

    def handle(
        self, raw: bytes | None, origin: Origin, table: MutableMapping[bytes, bytes]
    ) -> Outcome:
        return self.handle_batch([(raw, origin)], table)[0]

    def handle_batch(
        self, messages: list[tuple[bytes | None, Origin]], table: MutableMapping[bytes, bytes]
    ) -> list[Outcome]:
        """Each message in turn (agents.runtime.batches), each version's state decoded at
        its first use and encoded and written once, at the end of the batch
        (``_states``). Consecutive messages of a version are counted as one batch while
        counting them one at a time would close no window in between (``_Run``):
        windows close after the same message as one at a time, with the same reports."""
        runs: dict[tuple[str, str], _Run] = {}
        decoded = self._arrow_runs(messages)
        with self._states.batch(table):
            outcomes = []
            for i, (raw, origin) in enumerate(messages):
                if origin.topic == self.references_topic:
                    self._finish(runs, table)  # the next messages judge on the new profile
                    out = Outcome()
                    self._store_profile(raw, origin, table, out)
                    outcomes.append(out)
                else:
                    outcomes.append(self._message(raw, origin, table, runs, decoded.get(i)))
            self._finish(runs, table)
        return outcomes

    def _arrow_runs(self, messages: list[tuple[bytes | None, Origin]]) -> dict[int, Columns]:
        """Consecutive Arrow messages of one topic and key, read as one table by the
        Arrow lane (``ArrowLane.decode_many``): their columns by index in ``messages``.
        Messages it cannot take together are decoded one by one, as before."""
        out: dict[int, Columns] = {}
        start = 0
        while start < len(messages):
            raw, origin = messages[start]
            end = start + 1
            if origin.topic != self.references_topic and arrow.is_arrow(raw):
                while end < len(messages) and arrow.is_arrow(messages[end][0]) and (
                    messages[end][1].topic,
                    messages[end][1].key,
                ) == (origin.topic, origin.key):
                    end += 1
            if end - start > 1:
                lane = self._arrow_lanes[origin.topic]
                columns = lane.decode_many([m[0] for m in messages[start:end]], origin)
                if columns is not None:
                    out.update(enumerate(columns, start))
            start = end
        return out

    def _message(
        self,
        raw: bytes | None,
        origin: Origin,
        table: MutableMapping[bytes, bytes],
        runs: dict[tuple[str, str], _Run],
        fast: Columns | None = None,
    ) -> Outcome:
        """One message: ``fast`` its columns when the Arrow lane read it with others."""
        out = Outcome()
        columnar = arrow.is_arrow(raw)
        lane = self._lanes[origin.topic]
        if fast is None:
            fast = (self._arrow_lanes[origin.topic] if columnar else lane).decode(raw, origin)
        if fast is not None and self.admission.admit(fast.model, origin, table):
            version = fast.version or UNVERSIONED
            out.counted += self._fold(fast.model, version, fast.batch, table,
                                      _Source(origin, raw, out), runs)
            return out
        decoded = self._codecs[origin.topic].decode(raw, origin)
        if not columnar:
            lane.learn(origin, decoded.events)
        events = keyed_events(decoded, origin, agent=self.AGENT)
        events, refused = self.admission.split(events, decoded, raw, origin, table)
        out.dead.extend(decoded.dead)
        out.dead.extend(refused)
        groups: dict[tuple[str, str], list[Row]] = {}
        versions = set(map(dict.get, events, repeat("model_version")))
        if len(versions) == 1 and len(set(map(MODEL, events))) == 1:  # the usual case
            groups[events[0]["model"], versions.pop() or UNVERSIONED] = events
        else:
            for event in events:
                version = event.get("model_version") or UNVERSIONED
                groups.setdefault((event["model"], version), []).append(event)
        source = _Source(origin, raw, out, {id(e): i for i, e in
                                             zip(decoded.positions, decoded.events, strict=True)})
        for (model, version), events in groups.items():
            out.counted += self._fold(model, version, to_batch(events), table, source, runs,
                                      events)
        return out

    @cached_property
    def _states(self) -> BatchStates[Any]:
        """The versions' states (``model@version``) as ``_fold`` reads and writes them:
        within ``handle_batch``, decoded and written once per batch."""
        return BatchStates(loads=state_codec.loads, dumps=state_codec.dumps)

    def _fold(
        self,
        model: str,
        version: str,
        batch: FeatureBatch,
        table: MutableMapping[bytes, bytes],
        source: _Source,
        runs: dict[tuple[str, str], _Run],
        rows: list[Row] | None = None,
    ) -> int:
        """Keep the events within the future bound (dead letters for the others) and add
        them to the version's run, counted at once if they close a window (or bring a
        feature the state has not seen), else with the next. Returns the events kept."""
        monitor = self.monitor(model)
        run = runs.get((model, version))
        if run is None:
            run = runs[model, version] = self._begin(model, version, table)
        state = run.state
        check = self.future.check(batch.ts_ms, stream_ms=run.watermark_ms,
                                  ahead=state.get("ahead"))
        if check.ahead is not None or state.get("ahead") is not None:
            state["ahead"] = check.ahead
        if not check.keep.all():
            positions = None if rows is None else [source.positions.get(id(r)) for r in rows]
            source.out.dead.extend(self.future.letters(check, batch.ts_ms, source.origin,
                                                       source.raw, rows=rows,
                                                       positions=positions))
            batch = batch.select(check.keep)
        if not len(batch):
            return 0
        panes = run.panes | monitor.panes_of(state, batch.ts_ms)
        high = int(batch.ts_ms.max())
        watermark = high if run.watermark_ms is None else max(run.watermark_ms, high)
        known = state["kinds"].keys() | set(state["untracked"])
        pending = sum(map(len, run.batches)) + len(batch)  # (count windows)
        alone = not batch.columns.keys() <= known or monitor.would_close(
            state, panes, watermark, pending)
        if run.batches and (alone or not same_columns(run.batches[0], batch)):
            self._count(run, table)
            panes = monitor.panes_of(run.state, batch.ts_ms)
        run.batches.append(batch)
        run.panes, run.watermark_ms, run.last = panes, watermark, source
        if alone:
            self._count(run, table)
        return len(batch)

    def _begin(self, model: str, version: str, table: MutableMapping[bytes, bytes]) -> _Run:
        """The version's run: its state, with the references stored apart put back."""
        monitor = self.monitor(model)
        key = f"{model}@{version}".encode()
        state = self._states.get(table, key) or monitor.initialize(model, version)
        stored = table.get(key + REFERENCE_SUFFIX)
        old = table.get(key + REFERENCE_SUFFIX + PREVIOUS_SUFFIX)
        state = reference_switch.attach(
            state,
            self._reference(key + REFERENCE_SUFFIX, stored) if stored is not None else None,
            self._reference(key + REFERENCE_SUFFIX + PREVIOUS_SUFFIX, old)
            if old is not None else None,
            pane_end=monitor.windows.pane_end,
        )
        return _Run(key, state, stored, old, state["watermark_ms"])

    def _count(self, run: _Run, table: MutableMapping[bytes, bytes]) -> None:
        """Fold the run's batches in as one, close the windows due (the reports go with
        the run's last message), write the state back.

        The reference (tens of KB, fixed once built) lives under its own key, so
        each batch writes only the small window state to the table's changelog.
        """
        monitor = self.monitor(run.state["model"])
        state = run.state
        if run.batches:
            state = monitor.update(state, concat(run.batches))
            state, reports = monitor.close_ready(state)
            assert run.last is not None
            run.last.out.reports.extend(reports)
        reference = state["reference"]
        ref_key = run.key + REFERENCE_SUFFIX
        if reference is not None and run.stored is None:
            run.stored = state_codec.dumps(reference)
            table[ref_key] = run.stored
            self._references[ref_key] = (run.stored, reference)
        if reference_switch.settled(state) and run.old is not None:
            del table[ref_key + PREVIOUS_SUFFIX]  # every window counted on it has closed
            run.old = None
        self._states.put(table, run.key, reference_switch.detach(state))
        run.state, run.batches, run.panes = state, [], set()

    def _finish(
        self, runs: dict[tuple[str, str], _Run], table: MutableMapping[bytes, bytes]
    ) -> None:
        """Count every run's batches and write its state."""
        for run in runs.values():
            self._count(run, table)
        runs.clear()

    def _store_profile(
        self, raw: bytes | None, origin: Origin, table: MutableMapping[bytes, bytes], out: Outcome
    ) -> None:
        """A ReferenceProfile replaces the version's reference from its next window on."""
        try:
            profile = ReferenceProfile.model_validate_json(raw or b"")
        except ValidationError as exc:
            out.dead.append(
                dead_letter(
                    origin,
                    "not a valid ReferenceProfile: "
                    f"{explain(exc, where_empty='(message)', limit=3)}; build "
                    "profiles with `driftline reference build`",
                    raw or b"",
                    agent=self.AGENT,
                )
            )
            return
        refused = self.admission.refuse_one(profile.model, raw, origin, table)
        if refused is not None:
            out.dead.append(refused)
            return
        reference = reference_from_profile(profile)
        key = f"{profile.model}@{profile.model_version}".encode() + REFERENCE_SUFFIX
        current = table.get(key)
        if current is not None and key + PREVIOUS_SUFFIX not in table:
            # Open windows were counted on the current reference's bins: keep it
            # for them (see streams.drift.reference_switch).
            table[key + PREVIOUS_SUFFIX] = current
        table[key] = state_codec.dumps(reference)
        out.counted += 1

    def _reference(self, key: bytes, raw: bytes) -> Any:
        """Decoded reference, cached while the stored bytes are unchanged."""
        cached = self._references.get(key)
        if cached is not None and cached[0] == raw:
            return cached[1]
        reference = state_codec.loads(raw)
        if len(self._references) >= self.MAX_CACHED_REFERENCES:
            self._references.pop(next(iter(self._references)))
        self._references[key] = (raw, reference)
        return reference


@dataclass
class _Run:
    """A version's events from consecutive messages of one batch, not counted yet.

    Counted one message at a time, a window closes after the message whose events
    move the watermark past it (or open a pane too many). While no message of the
    run does (``DriftMonitor.would_close``), the run's events are counted as one
    batch when it ends: the kernels give the same state for any split of the
    events into batches (``streams.drift.multivariate`` says how, to the last
    bit), and the per-call costs (a few dozen array operations per feature) are
    paid once instead of per message. A message that closes windows, or brings a
    feature the state has not registered (its kind and anchor come from the
    first message that carries it), is counted at once, after the run before it.

    Bounds: the events of one batch of messages (``batch_max_messages``).
    """

    key: bytes  # model@version, the state's table key
    state: VersionState  # references attached; the batches not counted yet
    stored: bytes | None  # the stored reference
    old: bytes | None  # the stored reference it replaced, while windows keep it
    watermark_ms: int | None  # the state's and the batches' latest ts
    batches: list[FeatureBatch] = field(default_factory=list)
    panes: set[int] = field(default_factory=set)  # the panes the batches add to
    last: _Source | None = None  # the message the run's reports go with


@dataclass
class _Source:
    """The message being handled: for dead letters of its events, and its outcome."""

    origin: Origin
    raw: bytes | None
    out: Outcome
    #: id(row) -> the row's position in the message (rows decoded one by one)
    positions: dict[int, int] = field(default_factory=dict)


_TS_MS = itemgetter("ts_ms")
_NONE: dict[str, Any] = {}


def to_batch(events: list[Row]) -> FeatureBatch:
    """Columns of the events' features, plus the model's score and prediction (if any)."""
    ts = list(map(_TS_MS, events))
    batch = FeatureBatch.from_rows(ts, [e.get("features") or _NONE for e in events])
    if any("prediction" in e for e in events):  # FeatureEvents have no outputs
        columns = dict(batch.columns)
        columns[SCORE] = [e.get("score") for e in events]
        columns[PREDICTION] = [e.get("prediction") for e in events]
        batch = FeatureBatch(ts_ms=batch.ts_ms, columns=columns)
    return batch
