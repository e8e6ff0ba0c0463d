"""Predictions and delayed labels in; KpiReports per version, variant and window out.

Faust-free like the drift handler: the KPI agent calls it with its table, tests
and replays with a dict. It routes each message (predictions, labels, reference
profiles) to its model's ``agents.kpi.model_batch.ModelBatch``, which reads the
model's state from the table, calls the kernels and writes the state back; the
table's keys are listed there.

The kernels are in ``streams``: the label join (``streams.join``), each
window's accumulators (``streams.kpi.window``), a series' windows and when
each is reported, revised and retired (``streams.kpi.series``, by the rules of
``streams.kpi.revisions``), the concept detector (``streams.kpi.concept``).
This module decodes; ``ModelBatch`` reads their state from the table, calls
them, and writes the state back: once per key and batch. Reports follow event time (so a
replay emits the same final reports) and, from the KPI agent's timer
(:meth:`KpiHandler.tick`), processing time when event time stops moving.

**Shadows.** A shadow's predictions (variant ``shadow``) go into the label join in a
lane of their own (``streams.join``), so they wait beside the served prediction of
the same request id instead of counting as its duplicate, and one label completes
both: each version gets its KpiReport as any series does. The pairs the join finds
(on arrival, and again when labeled) are folded into the shadow window's comparison,
which the shadow's reports carry in ``shadow``.

**Calibration** (estimates before labels, ``streams.kpi.estimate``). The agent
reads ``references`` too, as the drift and poisoning agents do: a
ReferenceProfile's ``calibration`` is stored under ``r|model|version`` (a few
KB; only for admitted models; a newer profile of the version replaces it, one
without a calibration removes it), and every report of that version, from
revision 0, estimates its metrics with the one stored when it is made. The
references topic is keyed ``model@version``, the KPI inputs by model, so with
several partitions a profile is handled by the worker that owns its own
partition: the same known limit as the drift agent's (docs/operations.md,
scale-out: key profiles so they land with their model's events, or run one
worker). Rejected alternatives: a calibration section in the policy file (it
would fall out of step with the published profile) and a join through another
topic (a second copy of what ``references`` already carries, compacted).

Events more than ``max_future_ms`` ahead of the model's stream time (the
largest ``ts`` accepted on either input) are dead-lettered (``agents.inputs.future``):
one bad client clock must not expire every pending prediction of its model.

Bounds: ``max_models`` models per partition (``agents.inputs.admission``); per model
``model_batch.MAX_SERIES`` versions x variants; a calibration (a few KB) and bands (under 1.5 KB)
per profiled version;
per series ``label_ttl / window + 1`` windows of a few KB (see ``streams.kpi.window``;
count windows: the partial one and the full ones not final yet, and the count),
and per shadow window a comparison of at most 8 x 11 numbers (``streams.kpi.shadow``);
the join's pending entries (about 150 bytes each) for predictions younger than the TTL.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from operator import itemgetter
from typing import Any

import orjson

from agents.config import DEFAULT_MAX_MODELS
from agents.inputs.admission import Admission
from agents.inputs.codec import Codec, Origin, Row, decode_one, keyed_events
from agents.inputs.future import FutureBound
from agents.inputs.pii import Pseudonymizer
from agents.kpi.model_batch import (
    BANDS,
    CALIBRATION,
    CONCEPT,
    MODEL_INDEX,
    ModelBatch,
    Store,
    table_key,
)
from agents.runtime.overlay import Overlay
from agents.runtime.runner import Outcome
from schemas.events import LabelEvent, PredictionEvent
from schemas.policy import KpiPolicy, Policy
from schemas.reference import ReferenceProfile
from schemas.reports import KpiReport
from streams.join import SEP, LabelJoin
from streams.kpi import series as lifecycle
from streams.kpi.window import KpiWindow

logger = logging.getLogger(__name__)

_MODEL = itemgetter("model")


def _models_key(partition: int) -> bytes:
    """The models with KPI state on ``partition`` (admitted ones, and the policy's)."""
    return b"\x00driftline|kpi-models|%d" % partition


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class KpiHandler:
    AGENT = "kpi"

    def __init__(
        self,
        *,
        policy: Policy,
        predictions_topic: str,
        labels_topic: str,
        max_message_bytes: int,
        references_topic: str = "references",
        pii_key: bytes = b"",
        max_models: int = DEFAULT_MAX_MODELS,
        max_future_ms: int = 3_600_000,
        clock_ms: Callable[[], int] = _wall_ms,
        prepare: Callable[[], None] | None = None,
    ) -> None:
        self.policy = policy
        #: called once, at the first message (the worker: import the concept detectors)
        self._prepare = prepare
        self.future = FutureBound(max_future_ms=max_future_ms, agent=self.AGENT)
        #: processing time, for when a window last changed (``revision_delay``)
        self.clock_ms = clock_ms
        self.predictions_topic = predictions_topic
        self.references_topic = references_topic
        # Only admitted models get state, here and in the table (agents.inputs.admission).
        self.admission = Admission(agent=self.AGENT, max_models=max_models, listed=policy.models)
        self._codecs = {
            predictions_topic: Codec(
                PredictionEvent,
                max_message_bytes=max_message_bytes,
                agent=self.AGENT,
                pii=Pseudonymizer(policy.pii, pii_key),
            ),
            labels_topic: Codec(LabelEvent, max_message_bytes=max_message_bytes, agent=self.AGENT),
        }
        self._models: dict[str, tuple[KpiPolicy, LabelJoin, KpiWindow]] = {}  # admitted ones
        #: processing time each window last changed, (model, version, variant, start) ->
        #: ms: for ``revision_delay`` only. In memory, not in the table: it depends on
        #: when the worker ran, and the table holds only what the messages determine (a
        #: replay or a recovery gives the same state). Bounded by the windows in state:
        #: an entry goes when its window is reported. After a restart or a rebalance a
        #: changed window's delay counts from the timer's first look at it.
        self._changed: dict[tuple[str, str, str, int], int] = {}

    def _for(self, model: str) -> tuple[KpiPolicy, LabelJoin, KpiWindow]:
        if model not in self._models:
            p = self.policy.kpi_for(model)
            join = LabelJoin(ttl_ms=p.label_ttl, bucket_ms=lifecycle.bucket_ms(p))
            self._models[model] = (p, join, KpiWindow(p))
        return self._models[model]

    def _batch(self, model: str, store: Store, now_ms: int) -> ModelBatch:
        return ModelBatch(
            model,
            store,
            now_ms=now_ms,
            kernels=self._for(model),
            future=self.future,
            changed=self._changed,
        )

    def forget(self) -> None:
        """Drop in-memory working sets (after a rebalance); rebuilt from the table."""
        for _, join, _ in self._models.values():
            join.forget()
        self._changed.clear()

    # -- entry point -----------------------------------------------------------

    def handle(self, raw: bytes | None, origin: Origin, table: Store) -> Outcome:
        return self.handle_batch([(raw, origin)], table)[0]

    def handle_batch(
        self, messages: list[tuple[bytes | None, Origin]], table: Store
    ) -> list[Outcome]:
        """Each message in turn (agents.runtime.batches), with one ``ModelBatch`` per model for the
        whole batch: its state (series indexes, windows, concept detectors, the model
        index) is decoded at its first use and encoded and written once, at the end.
        Reports are due after each message, as one at a time."""
        if self._prepare is not None:
            prepare, self._prepare = self._prepare, None
            prepare()
        works: dict[str, ModelBatch] = {}
        outcomes = [self._message(raw, origin, table, works) for raw, origin in messages]
        for work in works.values():
            work.write()
        return outcomes

    def _message(
        self, raw: bytes | None, origin: Origin, table: Store, works: dict[str, ModelBatch]
    ) -> Outcome:
        if origin.topic == self.references_topic:
            return self._profile(raw, origin, table)
        out = Outcome()
        decoded = self._codecs[origin.topic].decode(raw, origin)
        events = keyed_events(decoded, origin, agent=self.AGENT)
        events, refused = self.admission.split(events, decoded, raw, origin, table)
        out.dead.extend(decoded.dead)
        out.dead.extend(refused)
        by_model: dict[str, list[Row]] = {}
        if len(set(map(_MODEL, events))) == 1:  # the usual case, checked at C speed
            by_model[events[0]["model"]] = events
        else:
            for event in events:
                by_model.setdefault(event["model"], []).append(event)
        self._record_models(by_model, origin.partition, table)

        def position() -> dict[int, int]:  # for dead letters: rare, so made when needed
            return {id(e): i for i, e in zip(decoded.positions, decoded.events, strict=True)}

        predictions = origin.topic == self.predictions_topic
        for model, rows in by_model.items():
            work = works.get(model)
            if work is None:
                work = works[model] = self._batch(model, table, self.clock_ms())
            else:
                work.now_ms = self.clock_ms()
            rows = work.bound(rows, "p" if predictions else "l", origin, raw, position, out)
            if rows and predictions:
                work.predictions(rows)
            elif rows:
                work.labels(rows)
            out.reports.extend(work.close())
            out.counted += len(rows)
        return out

    def _profile(self, raw: bytes | None, origin: Origin, table: Store) -> Outcome:
        """A ReferenceProfile: its calibration (or none) for the version's next reports."""
        profile, dead = decode_one(ReferenceProfile, raw, origin, agent=self.AGENT)
        if profile is None:
            return Outcome(dead=[dead] if dead else [])
        refused = self.admission.refuse_one(profile.model, raw, origin, table)
        if refused is not None:
            return Outcome(dead=[refused])
        concept = profile.concept
        table[table_key(CONCEPT, profile.model, profile.model_version)] = (
            b"null" if concept is None else concept.model_dump_json().encode()
        )
        bands = profile.bands
        table[table_key(BANDS, profile.model, profile.model_version)] = (
            b"null" if bands is None else bands.model_dump_json().encode()
        )
        cal = profile.calibration
        table[table_key(CALIBRATION, profile.model, profile.model_version)] = (
            b"null" if cal is None else cal.model_dump_json().encode()
        )
        if cal is not None:
            logger.info(
                "calibration of %s@%s: %d blocks over %d reference events",
                profile.model,
                profile.model_version,
                len(cal.probability),
                sum(cal.count),
            )
        return Outcome(counted=1)

    def tick(self, now_ms: int, partition: int, table: Store) -> Outcome:
        """The revisions processing time makes due on ``partition`` (the KPI agent's
        timer): windows that changed since their last report and then stayed unchanged
        for ``revision_delay``, though event time did not move (a quiet stream). Writes
        nothing unless it reports."""
        recorded = orjson.loads(table.get(_models_key(partition)) or b"[]")
        models = set(self.admission.admitted(partition, table)) | set(recorded)
        out = Outcome()
        for model in sorted(models):
            out.reports.extend(self._revise(model, table, now_ms))
        return out

    @staticmethod
    def _record_models(models: dict[str, Any], partition: int, table: Store) -> None:
        """Remember which models have state on ``partition``, for its timer: the models the
        policy lists are admitted without a record (``agents.inputs.admission``), and a table
        store's keys are not kept apart by partition."""
        key = _models_key(partition)
        recorded = orjson.loads(table.get(key) or b"[]")
        new = [m for m in models if m not in recorded]
        if new:
            table[key] = orjson.dumps(recorded + new)

    def flush(self, table: Store) -> list[KpiReport]:
        """Every revision still owed, as if ``revision_delay`` had passed for all
        windows (the end of a replay: the live worker's timer sent them)."""
        models = sorted(k[2:-1].decode() for k in table if k.startswith(b"k|") and k.endswith(SEP))
        return [r for model in models for r in self._revise(model, table, 2**62, settle=True)]

    def _revise(
        self, model: str, table: Store, now_ms: int, *, settle: bool = False
    ) -> list[KpiReport]:
        if table_key(MODEL_INDEX, model, "") not in table:
            return []  # a listed model with no state here
        scratch = Overlay(table)
        reports = self._batch(model, scratch, now_ms).finish(due_at_ms=now_ms, settle=settle)
        if reports:
            scratch.apply(table)
        return reports
