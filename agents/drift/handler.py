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
from agents.drift.columns import ColumnLane
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
from streams.batch import FeatureBatch
from streams.drift import reference_switch
from streams.drift.monitor import DriftMonitor
from streams.drift.state import PREDICTION, SCORE, reference_from_profile

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
        out = Outcome()
        if origin.topic == self.references_topic:
            self._store_profile(raw, origin, table, out)
            return out
        columnar = arrow.is_arrow(raw)
        lane = self._lanes[origin.topic]
        fast = (self._arrow_lanes[origin.topic] if columnar else lane).decode(raw, origin)
        if fast is not None and self.admission.admit(fast.model, origin, table):
            version = fast.version or UNVERSIONED
            out.counted += self._fold(fast.model, version, fast.batch, table,
                                      _Source(origin, raw, out))
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
            out.counted += self._fold(model, version, to_batch(events), table, source, events)
        return out

    def handle_batch(
        self, messages: list[tuple[bytes | None, Origin]], table: MutableMapping[bytes, bytes]
    ) -> list[Outcome]:
        """``handle`` on each message in turn (agents.runtime.batches), each version's state
        decoded at its first use and encoded and written once, at the end of the batch
        (``_states``). Windows close after each message's fold, as one at a time: the
        reports are the same."""
        with self._states.batch(table):
            return [self.handle(raw, origin, table) for raw, origin in messages]

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
        rows: list[Row] | None = None,
    ) -> int:
        """Read the version's state, fold the batch in, close windows, write it back;
        reports and dead letters go to ``source.out``. Returns the events counted.

        The reference (tens of KB, fixed once built) lives under its own key, so
        each batch writes only the small window state to the table's changelog.
        """
        monitor = self.monitor(model)
        state_key = f"{model}@{version}".encode()
        ref_key = state_key + REFERENCE_SUFFIX
        state = self._states.get(table, state_key) or monitor.initialize(model, version)
        stored = table.get(ref_key)  # the state is stored without its references
        previous_key = ref_key + PREVIOUS_SUFFIX
        old = table.get(previous_key)
        state = reference_switch.attach(
            state,
            self._reference(ref_key, stored) if stored is not None else None,
            self._reference(previous_key, old) if old is not None else None,
            pane_ms=monitor.policy.pane,
        )
        check = self.future.check(batch.ts_ms, stream_ms=state["watermark_ms"],
                                  ahead=state.get("ahead"))
        if check.ahead is not None or state.get("ahead") is not None:
            state["ahead"] = check.ahead
        if not check.keep.all():
            positions = None if rows is None else [source.positions.get(id(r)) for r in rows]
            source.out.dead.extend(self.future.letters(check, batch.ts_ms, source.origin,
                                                       source.raw, rows=rows,
                                                       positions=positions))
            batch = batch.select(check.keep)
        state = monitor.update(state, batch)
        state, reports = monitor.close_ready(state)
        reference = state["reference"]
        if reference is not None and stored is None:
            raw = state_codec.dumps(reference)
            table[ref_key] = raw
            self._references[ref_key] = (raw, reference)
        if reference_switch.settled(state) and old is not None:
            del table[previous_key]  # every window counted on it has closed
        self._states.put(table, state_key, reference_switch.detach(state))
        source.out.reports.extend(reports)
        return len(batch)

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
