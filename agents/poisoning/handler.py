"""The poisoning guard's handler: training records in, clean / quarantined records out.

Sources: ``training-data`` (TrainingRecords, one or a batch per message, key
model) and ``references`` (a ReferenceProfile whose ``trusted`` set, built by
``driftline reference build`` from labeled training data, is what records are
judged against). Outputs: the records that pass, as one batch message per
input message, on ``training-data.clean``; each quarantined record with its
reasons and scores on ``training-data.quarantine``; a PoisoningReport per
model and closed window on ``poisoning`` (see ``streams.poisoning``).

Nothing is lost, and nothing unscreened reaches retraining: records of a
model whose trusted set has not arrived yet wait in the table
(agents.poisoning.hold; ``references`` and ``training-data`` are read with no
order between them) and are screened in order when it arrives. Beyond the
policy's ``hold_max_records`` or ``hold_max_age`` they are quarantined
unscreened with the reason ``no_trusted_set`` (an operator can release them
with ``driftline quarantine release`` once one is published), in a
PoisoningReport of their own (``unscreened``). Reports count held records
(``held``, ``released``, ``unscreened``), and so do the metrics
(``driftline_poisoning_held_total`` ...).

State, in the table ``poisoning-state``: the newest profile with a trusted set
per model (key ``t|<model>``; held records under ``hq|``/``h|``, see
agents.poisoning.hold), and each guard's windows and sources (key
``guard|<model>``: ``PoisoningGuard.state()``, the open windows' counts and
duplicate caches, the sources' histories and suspicion, encoded with
agents.runtime.state_codec together with a digest of the profile it belongs
to). The guard's checks are fitted on the trusted set in memory (rebuilt
deterministically from the profile); its state is written to the table after
each message, or once per batch of messages (``handle_batch``), and read back
whenever the table's differs from what this handler last wrote: after a
restart, a rebalance (``forget``) or a batch whose writes were not applied. So a
restarted worker, or the one a partition moves to, goes on with the same
windows and histories, and gives the verdicts and reports one worker would have.
A state larger than half of ``DRIFTLINE_MAX_MESSAGE_BYTES`` (possible only
near the policy's limits: see docs/memory.md) is not written, with a warning,
and a restart starts that guard afresh. A table without the key (written by an
earlier driftline) starts afresh, as before; a stored state that cannot be read
is logged once, naming the model, and starts afresh. A new trusted set starts
the guard afresh (its state is removed), as before. Both exist only for
admitted models, at most ``max_models`` per partition besides the policy's
(``agents.inputs.admission``): the records and profiles of other models are
dead-lettered, so they do not reach retraining either.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import MutableMapping
from dataclasses import dataclass

import orjson

from agents import metrics
from agents.config import DEFAULT_MAX_MODELS
from agents.inputs.admission import Admission
from agents.inputs.codec import Codec, Origin, decode_one, keyed_events
from agents.inputs.pii import Pseudonymizer
from agents.poisoning import hold as poisoning_hold
from agents.runtime import state_codec
from agents.runtime.runner import Messages, Outcome
from schemas.events import TrainingRecord
from schemas.policy import Policy
from schemas.reference import ReferenceProfile
from schemas.reports import QuarantinedRecord
from streams.poisoning.guard import PoisoningGuard
from streams.poisoning.report import NO_TRUSTED_SET, unscreened_report

logger = logging.getLogger(__name__)

__all__ = ["NO_TRUSTED_SET", "PoisoningHandler", "guard_key"]


def guard_key(model: str) -> bytes:
    """The table key of a model's guard state."""
    return f"guard|{model}".encode()


@dataclass
class _Guard:
    """A model's guard, the profile it was fitted on and the stored state it matches."""

    profile: bytes  # the table's t|<model> it was built from
    digest: str  # of the profile, stored with the state
    guard: PoisoningGuard
    stored: bytes | None = None  # the table's guard|<model> the guard's state is (None: fresh)
    too_large: bool = False  # its state was too large to keep (logged once)


class PoisoningHandler:
    AGENT = "poisoning"

    def __init__(self, policy: Policy, *, training_topic: str, references_topic: str,
                 max_message_bytes: int, pii_key: bytes = b"",
                 max_models: int = DEFAULT_MAX_MODELS,
                 max_state_bytes: int | None = None) -> None:
        self.policy = policy
        #: the largest guard state written to the table (half the largest message: the
        #: batch's redo record, a changelog record too, holds it again)
        self.max_state_bytes = max_state_bytes or max_message_bytes // 2
        # Only admitted models get state, here and in the table (agents.inputs.admission).
        self.admission = Admission(agent=self.AGENT, max_models=max_models,
                                   listed=policy.models)
        self.training_topic, self.references_topic = training_topic, references_topic
        self.codec = Codec(TrainingRecord, max_message_bytes=max_message_bytes, agent=self.AGENT,
                           pii=Pseudonymizer(policy.pii, pii_key))
        self._guards: dict[str, _Guard] = {}
        self._screened: set[str] = set()  # models whose guard screened since the last save

    def handle(
        self, raw: bytes | None, origin: Origin, table: MutableMapping[bytes, bytes]
    ) -> Outcome:
        return self.handle_batch([(raw, origin)], table)[0]

    def handle_batch(self, messages: Messages,
                     table: MutableMapping[bytes, bytes]) -> list[Outcome]:
        """Each message in turn; the state of the guards that screened records is written
        once, at the end."""
        try:
            outcomes = [self._handle(raw, origin, table) for raw, origin in messages]
            for model in sorted(self._screened):
                self._save(model, table)
            return outcomes
        finally:
            self._screened.clear()

    def _handle(
        self, raw: bytes | None, origin: Origin, table: MutableMapping[bytes, bytes]
    ) -> Outcome:
        if origin.topic == self.references_topic:
            return self._reference(raw, origin, table)
        decoded = self.codec.decode(raw, origin)
        rows = keyed_events(decoded, origin, agent=self.AGENT)
        rows, refused = self.admission.split(rows, decoded, raw, origin, table)
        out = Outcome(dead=[*decoded.dead, *refused], counted=len(rows))
        by_model: dict[str, list[TrainingRecord]] = defaultdict(list)
        for row in rows:  # validated by the codec already (every field is required)
            by_model[row["model"]].append(TrainingRecord.model_construct(**row))
        for model, records in by_model.items():
            self._screen(model, records, table, out)
        return out

    def _reference(self, raw: bytes | None, origin: Origin,
                   table: MutableMapping[bytes, bytes]) -> Outcome:
        profile, dead = decode_one(ReferenceProfile, raw, origin, agent=self.AGENT)
        if profile is None:
            return Outcome(dead=[dead] if dead else [])
        if profile.trusted is not None and raw:
            refused = self.admission.refuse_one(profile.model, raw, origin, table)
            if refused is not None:
                return Outcome(dead=[refused])
            table[f"t|{profile.model}".encode()] = raw
            # rebuilt on the next records, afresh
            self._guards.pop(profile.model, None)
            self._screened.discard(profile.model)
            table.pop(guard_key(profile.model), None)
            logger.info("trusted set of %s: %d rows from %s (%s)", profile.model,
                        len(profile.trusted.labels), profile.source, profile.model_version)
            return self._release(profile.model, table)
        return Outcome()

    def _release(self, model: str, table: MutableMapping[bytes, bytes]) -> Outcome:
        """Screen, in order, the records of ``model`` that waited for its trusted set."""
        out = Outcome()
        if not poisoning_hold.waiting(table, model):
            return out  # the guard is built on the model's first records, as before
        guard = self._guard(model, table)
        if guard is None:
            return out
        held = poisoning_hold.take(table, model)
        for records in held:  # one held message at a time, as they came
            self._screen_with(guard, model, records, out, held=True)
        n = sum(len(records) for records in held)
        metrics.POISONING_RELEASED.labels(model).inc(n)
        metrics.POISONING_WAITING.labels(model).set(0)
        logger.info("screened %d records of %s that had waited for its trusted set", n, model)
        return out

    def _guard(self, model: str, table: MutableMapping[bytes, bytes]) -> PoisoningGuard | None:
        raw = table.get(f"t|{model}".encode())
        if raw is None:
            return None
        cached = self._guards.get(model)
        if cached is None or cached.profile != raw:
            profile = ReferenceProfile.model_validate_json(raw)
            assert profile.trusted is not None
            guard = PoisoningGuard(self.policy.poisoning_for(model), profile.trusted, profile)
            digest = hashlib.blake2b(raw, digest_size=16).hexdigest()
            cached = self._guards[model] = _Guard(raw, digest, guard)
        stored = table.get(guard_key(model))
        if stored != cached.stored:  # a restart, forget(), or writes not applied
            self._load(model, cached, stored)
        return cached.guard

    def _load(self, model: str, cached: _Guard, stored: bytes | None) -> None:
        """Set the guard's state to the stored one; afresh when there is none or it cannot
        be read (logged)."""
        cached.stored = stored
        if stored is None:
            cached.guard.reset()
            return
        try:
            value = state_codec.loads(stored)
            if value["profile"] != cached.digest:
                raise ValueError("it was kept for another trusted set")
            cached.guard.restore(value["guard"])
        except Exception as exc:  # never stop the agent on a state it cannot read
            logger.warning("the poisoning guard state of model %r in the table cannot be read "
                           "(%s: %s); its open windows and source histories start afresh",
                           model, type(exc).__name__, exc)
            cached.guard.reset()

    def _save(self, model: str, table: MutableMapping[bytes, bytes]) -> None:
        cached = self._guards.get(model)
        if cached is None:
            return
        value = state_codec.dumps({"profile": cached.digest, "guard": cached.guard.state()})
        if len(value) > self.max_state_bytes:
            if not cached.too_large:
                cached.too_large = True
                logger.warning(
                    "the poisoning guard state of model %r is %d bytes, more than %d: it is "
                    "not kept in the table, so a restart starts its open windows and source "
                    "histories afresh; lower its policy's duplicate_cache_size, max_sources or "
                    "max_open_windows, or raise DRIFTLINE_MAX_MESSAGE_BYTES",
                    model, len(value), self.max_state_bytes)
            table.pop(guard_key(model), None)
            cached.stored = None
            return
        table[guard_key(model)] = value
        cached.stored = value

    def _screen(self, model: str, records: list[TrainingRecord],
                table: MutableMapping[bytes, bytes], out: Outcome) -> None:
        guard = self._guard(model, table)
        if guard is None:
            self._hold(model, records, table, out)
            return
        self._screen_with(guard, model, records, out)

    def _hold(self, model: str, records: list[TrainingRecord],
              table: MutableMapping[bytes, bytes], out: Outcome) -> None:
        """Keep the records until the model's trusted set arrives; quarantine unscreened
        those held beyond the policy's limits."""
        policy = self.policy.poisoning_for(model)
        left = poisoning_hold.hold(table, model, records, max_records=policy.hold_max_records,
                                   max_age_ms=policy.hold_max_age)
        metrics.POISONING_HELD.labels(model).inc(len(records))
        key = model.encode()
        for gone in left:
            for record in gone.records:
                quarantined = QuarantinedRecord(record=record, reasons=[NO_TRUSTED_SET],
                                                scores={})
                out.routed.append(("training-data.quarantine", key,
                                   quarantined.model_dump_json().encode()))
            out.reports.append(unscreened_report(
                policy, model, gone.records,
                f"{gone.why}; publish its trusted set with `driftline reference build`, then "
                f"release them with `driftline quarantine release`"))
            metrics.POISONING_UNSCREENED.labels(model).inc(len(gone.records))
            logger.warning("%d records of %s quarantined unscreened: %s", len(gone.records),
                           model, gone.why)
        metrics.POISONING_WAITING.labels(model).set(poisoning_hold.waiting(table, model))

    def _screen_with(self, guard: PoisoningGuard, model: str, records: list[TrainingRecord],
                     out: Outcome, *, held: bool = False) -> None:
        key = model.encode()
        passed = []
        self._screened.add(model)
        for record, verdict in zip(records, guard.screen(records, held=held), strict=True):
            if verdict.passed:
                passed.append(record.model_dump(mode="json"))
            else:
                out.routed.append(("training-data.quarantine", key,
                                   verdict.quarantined(record).model_dump_json().encode()))
        if passed:
            out.routed.append(("training-data.clean", key, orjson.dumps({"events": passed})))
        out.reports.extend(guard.reports())

    def forget(self) -> None:
        """After a rebalance (or a message the handler failed on): guards are rebuilt from
        the table, with their stored state, for the models kept."""
        self._guards.clear()
        self._screened.clear()
