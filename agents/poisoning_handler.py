"""The poisoning guard's handler: training records in, clean / quarantined records out.

Sources: ``training-data`` (TrainingRecords, one or a batch per message, key
model) and ``references`` (a ReferenceProfile whose ``trusted`` set, built by
``driftline reference build`` from labeled training data, is what records are
judged against). Outputs: the records that pass, as one batch message per
input message, on ``training-data.clean``; each quarantined record with its
reasons and scores on ``training-data.quarantine``; a PoisoningReport per
model and closed window on ``poisoning`` (see ``streams.poisoning``).

Nothing is lost: a model without a trusted set yet gets its records
quarantined with the reason ``no_trusted_set`` (an operator can release them
with ``driftline quarantine release`` once one is published); the guard never
lets unscreened data reach retraining.

State: the newest profile with a trusted set per model, in the table
``poisoning-state`` (key ``t|<model>``), so a restarted worker rebuilds its
guards; the guards themselves (checks fitted on the trusted set, open windows
and per-source histories, bounded as ``PoisoningGuard`` documents) are in
memory: a restart loses the open windows' counts and the sources' histories
(the fitted checks are rebuilt deterministically). Both exist only for
admitted models, at most ``max_models`` per partition besides the policy's
(``agents.admission``): the records and profiles of other models are
dead-lettered, so they do not reach retraining either.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import MutableMapping

import orjson

from agents.admission import Admission
from agents.codec import Codec, Origin, decode_one, keyed_events
from agents.config import DEFAULT_MAX_MODELS
from agents.pii import Pseudonymizer
from agents.runner import Outcome
from schemas.events import TrainingRecord
from schemas.policy import Policy
from schemas.reference import ReferenceProfile
from schemas.reports import QuarantinedRecord
from streams.poisoning.guard import PoisoningGuard

logger = logging.getLogger(__name__)

NO_TRUSTED_SET = "no_trusted_set"


class PoisoningHandler:
    AGENT = "poisoning"

    def __init__(self, policy: Policy, *, training_topic: str, references_topic: str,
                 max_message_bytes: int, pii_key: bytes = b"",
                 max_models: int = DEFAULT_MAX_MODELS) -> None:
        self.policy = policy
        # Only admitted models get state, here and in the table (agents.admission).
        self.admission = Admission(agent=self.AGENT, max_models=max_models,
                                   listed=policy.models)
        self.training_topic, self.references_topic = training_topic, references_topic
        self.codec = Codec(TrainingRecord, max_message_bytes=max_message_bytes, agent=self.AGENT,
                           pii=Pseudonymizer(policy.pii, pii_key))
        self._guards: dict[str, tuple[bytes, PoisoningGuard]] = {}  # model -> (profile, guard)

    def handle(
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
            self._guards.pop(profile.model, None)  # rebuilt on the next records
            logger.info("trusted set of %s: %d rows from %s (%s)", profile.model,
                        len(profile.trusted.labels), profile.source, profile.model_version)
        return Outcome()

    def _guard(self, model: str, table: MutableMapping[bytes, bytes]) -> PoisoningGuard | None:
        raw = table.get(f"t|{model}".encode())
        if raw is None:
            return None
        cached = self._guards.get(model)
        if cached is None or cached[0] != raw:
            profile = ReferenceProfile.model_validate_json(raw)
            assert profile.trusted is not None
            guard = PoisoningGuard(self.policy.poisoning_for(model), profile.trusted, profile)
            cached = self._guards[model] = (raw, guard)
        return cached[1]

    def _screen(self, model: str, records: list[TrainingRecord],
                table: MutableMapping[bytes, bytes], out: Outcome) -> None:
        key = model.encode()
        guard = self._guard(model, table)
        if guard is None:
            for record in records:
                held = QuarantinedRecord(record=record, reasons=[NO_TRUSTED_SET], scores={})
                out.routed.append(("training-data.quarantine", key,
                                   held.model_dump_json().encode()))
            return
        passed = []
        for record, verdict in zip(records, guard.screen(records), strict=True):
            if verdict.passed:
                passed.append(record.model_dump(mode="json"))
            else:
                out.routed.append(("training-data.quarantine", key,
                                   verdict.quarantined(record).model_dump_json().encode()))
        if passed:
            out.routed.append(("training-data.clean", key, orjson.dumps({"events": passed})))
        out.reports.extend(guard.reports())

    def forget(self) -> None:
        """After a rebalance: guards are rebuilt from the table for the models kept."""
        self._guards.clear()
