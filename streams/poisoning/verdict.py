"""The poisoning guard's decision on one record, from its signals: a :class:`Verdict`.

How a record is judged (each check switchable in ``PoisoningPolicy``):

* *decisive* signals quarantine on their own: a schema reason
  (``streams.poisoning.schema_check``); ``label_inconsistent``, a label
  p-value at most ``label_false_rate`` (``streams.poisoning.label_consistency``:
  about that share of clean records gets one); ``duplicate_flood``
  (``streams.poisoning.duplicates``); and ``new_source_burst`` (a source never
  seen before, while others have history, beyond ``new_source_burst`` records
  in its first window);
* *weak* signals need their source to back them (``source_anomaly``,
  ``streams.poisoning.sources``): a label p-value up to ``label_weak_rate``
  counts when it is at or below the level its source earned by sending more
  inconsistent labels than a clean source would (flag ``label_disagreement``),
  an ``outlier`` score above its calibrated threshold counts when the source's
  feature means or volume departed (flags ``features``, ``volume``). A flag
  holds for the rest of its window and ``suspicion_windows`` more. An outlier
  alone never quarantines, nor does a flagged source alone: its honest
  records pass.

A quarantined record lists every signal that fired, decisive or not, and a
sentence saying why; every verdict carries the record's scores. ``decide`` is a
pure function of the checks, the record's signals (``streams.poisoning.signals``)
and its context; it keeps no state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from schemas.events import TrainingRecord
from schemas.reports import QuarantinedRecord
from streams.poisoning.checks import Checks
from streams.poisoning.signals import Context, RecordSignals

#: Source flags that back an outlier (a weak label is backed by its source's level).
FEATURE_FLAGS = frozenset({"features", "volume"})


@dataclass(frozen=True)
class Verdict:
    """The guard's decision on one record."""

    record_id: str
    source: str
    window_start_ms: int
    passed: bool
    reasons: tuple[str, ...]
    scores: dict[str, float]
    explanation: str

    def quarantined(self, record: TrainingRecord) -> QuarantinedRecord:
        """The record unchanged, with why (for ``training-data.quarantine``)."""
        return QuarantinedRecord(record=record, reasons=list(self.reasons), scores=self.scores)


def decide(
    checks: Checks, record: TrainingRecord, sig: RecordSignals, i: int, ctx: Context
) -> Verdict:
    """The verdict on ``record``, row ``i`` of the batch ``sig`` was gathered on."""
    p = checks.policy
    source, flags = ctx.source, ctx.suspicion.flags
    reasons = list(sig.schema.reasons[i])
    parts = [sig.schema.details[i]] if sig.schema.details[i] else []
    scores: dict[str, float] = {}
    if sig.schema.range_excess[i] > 0:
        scores["range_excess"] = float(sig.schema.range_excess[i])
    label_text = ""
    if sig.labels is not None and checks.labels is not None and np.isfinite(sig.labels.pvalue[i]):
        scores["label_p"] = float(sig.labels.pvalue[i])
        scores["label_ratio"] = float(sig.labels.ratio[i])
        nll = float(sig.labels.nll[i])
        if np.isfinite(nll):
            scores["label_nll"] = nll
        if sig.weak[i] or sig.strong[i]:
            preferred = checks.labels.classes[int(sig.labels.preferred[i])]
            label_text = (
                f"label {record.label!r} is inconsistent with the trusted data, which "
                f"prefers {preferred!r} (p={scores['label_p']:.3g}; neighbour distance "
                f"ratio {scores['label_ratio']:.2f}"
                + (f", linear p(label)={np.exp(-nll):.2g}" if np.isfinite(nll) else "")
                + ")"
            )
    if sig.outlier is not None and checks.outliers is not None:
        scores["outlier"] = float(sig.outlier[i])
        scores["outlier_threshold"] = checks.outliers.threshold
    if sig.dup_keys is not None:
        scores["copies"] = float(ctx.copies)
    if p.source_check:
        scores["source_flags"] = float(len(flags))

    if sig.strong[i]:
        reasons.append("label_inconsistent")
        parts.append(label_text)
    if ctx.flood:
        reasons.append("duplicate_flood")
        parts.append(
            f"{ctx.copies} copies from {source} in this window (more than {p.duplicate_max_copies})"
            if ctx.copies > p.duplicate_max_copies
            else f"{ctx.copies} copies from {source}, which floods copies in this window"
        )
    if ctx.burst > p.new_source_burst:
        reasons.append("new_source_burst")
        parts.append(
            f"new source {source} sent {ctx.burst} records in its first window "
            f"(the first {p.new_source_burst} pass)"
        )
    # Weak signals, each with the kind of source flag that backs it.
    weak: list[tuple[str, str, bool]] = []
    if sig.weak[i] and not sig.strong[i]:
        level = ctx.suspicion.level
        backed = scores["label_p"] <= level
        weak.append(
            (
                "label_inconsistent",
                label_text
                + (
                    f" (weak evidence; at most p={level:.3g} from this source)"
                    if backed
                    else " (weak evidence)"
                ),
                backed,
            )
        )
    if sig.is_outlier[i]:
        weak.append(
            (
                "outlier",
                f"unusual features (outlier score {scores['outlier']:.3f} "
                f"above {scores['outlier_threshold']:.3f})",
                bool(flags & FEATURE_FLAGS),
            )
        )
    source_text = f"source {source} is suspect: {ctx.suspicion.detail}" if flags else ""
    if reasons:  # decisive: add whatever else fired, as context
        reasons.extend(name for name, _, _ in weak)
        parts.extend(text for _, text, _ in weak)
        if flags:
            reasons.append("source_anomaly")
            parts.append(source_text)
    elif any(backed for _, _, backed in weak):
        reasons = [name for name, _, _ in weak] + ["source_anomaly"]
        parts = [text for _, text, _ in weak] + [source_text]
    if reasons:
        explanation = "quarantined: " + "; ".join(parts)
    else:
        explanation = "passed" + (
            "; not enough alone: " + "; ".join(text for _, text, _ in weak) if weak else ""
        )
    return Verdict(
        record_id=record.record_id,
        source=record.source,
        window_start_ms=ctx.window,
        passed=not reasons,
        reasons=tuple(reasons),
        scores=scores,
        explanation=explanation,
    )
