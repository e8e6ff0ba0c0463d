"""The poisoning guard's checks, fitted once on one model's trusted set (and profile).

``Checks.fit(policy, trusted, profile)`` caps the trusted set at
``trusted_max_rows`` (``streams.poisoning.trusted``), fits the encoder of its
features (``streams.poisoning.encode``), the label check
(``streams.poisoning.label_consistency``: with 2 to ``max_classes`` classes),
the schema's support (from the profile when there is one, else from the trusted
columns: ``streams.poisoning.schema_check``), the outlier scorer
(``streams.poisoning.outliers``) and the grid of label p-value levels a
source's level is chosen from (``streams.poisoning.sources``). Each check is
left out (None) when the policy switches it off or the trusted set cannot fit it.

The result is read-only configuration, not state: the same trusted set and
policy give the same checks, so the agent rebuilds them from the stored profile
and keeps only the guard's windows (``streams.poisoning.state``). What bounds
it: ``trusted_max_rows`` rows of at most ``max_features`` encoded columns (and
a k-d tree per class over them), the outlier trees' ``outlier_trees *
(2^(outlier_height+1) - 1)`` nodes, and at most ``STEPS`` levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from schemas.poisoning import PoisoningPolicy, TrustedSet
from schemas.reference import ReferenceProfile
from streams.poisoning.encode import Encoder, label_key
from streams.poisoning.label_consistency import LabelConsistency
from streams.poisoning.outliers import OutlierScorer
from streams.poisoning.schema_check import Support
from streams.poisoning.trusted import capped

#: Levels of the label p-value grid between the strong and the weak level.
STEPS = 16


def p_value_levels(strong: float, weak: float, steps: int = STEPS) -> npt.NDArray[np.float64]:
    """The grid of label p-value levels a source's level is chosen from: ``steps`` levels
    spaced evenly in log from the strong level to the weak one (p-values of a small
    trusted set come in steps of ``1 / (n + 1)``; a fine grid keeps them apart).

    >>> [round(v, 4) for v in p_value_levels(0.005, 0.05, steps=4).tolist()]
    [0.005, 0.0108, 0.0232, 0.05]
    """
    if weak <= strong:
        return np.array([strong])
    return np.geomspace(strong, weak, steps)


@dataclass(frozen=True)
class Checks:
    """One model's checks, fitted on its trusted set; ``notes`` say what cannot be judged."""

    policy: PoisoningPolicy
    model: str
    trusted_rows: int
    encoder: Encoder
    labels: LabelConsistency | None
    support: Support
    outliers: OutlierScorer | None
    levels: npt.NDArray[np.float64]  # increasing label p-value levels; empty without labels
    notes: tuple[str, ...] = ()

    @classmethod
    def fit(
        cls, policy: PoisoningPolicy, trusted: TrustedSet, profile: ReferenceProfile | None = None
    ) -> Checks:
        """The checks ``policy`` asks for, fitted on ``trusted`` (and ``profile``'s ranges)."""
        notes: list[str] = []
        trusted = capped(trusted, policy.trusted_max_rows)
        keys = [label_key(v) for v in trusted.labels]
        encoder = Encoder.fit(
            trusted.features,
            max_features=policy.max_features,
            max_categories=policy.max_categories,
        )
        z = encoder.encode(trusted.features, len(trusted))
        classes = sorted(set(keys))
        classification = 2 <= len(classes) <= policy.max_classes
        if not classification:
            notes.append(
                f"labels are not judged: the trusted set has {len(classes)} distinct labels "
                f"(the label check needs 2 to {policy.max_classes} classes)"
            )
        labels: LabelConsistency | None = None
        if policy.label_check and classification:
            labels = LabelConsistency(
                z,
                keys,
                k=policy.k,
                linear=policy.label_linear,
                false_rate=policy.label_false_rate,
            )
        known_labels = frozenset(classes) if classification else None
        support = (
            Support.from_profile(profile, policy, known_labels)
            if profile is not None
            else Support.from_columns(trusted.features, policy, known_labels)
        )
        outliers: OutlierScorer | None = None
        if policy.outlier_check and encoder.width:
            outliers = OutlierScorer(
                z,
                n_trees=policy.outlier_trees,
                height=policy.outlier_height,
                rate=policy.outlier_rate,
                seed=policy.outlier_seed,
            )
        levels = np.zeros(0)
        if labels is not None:
            levels = p_value_levels(
                labels.strong_level(policy.label_false_rate), policy.label_weak_rate
            )
        return cls(
            policy,
            trusted.model,
            len(trusted),
            encoder,
            labels,
            support,
            outliers,
            levels,
            tuple(notes),
        )

    @property
    def classes(self) -> int:
        """Trusted classes the label check knows (0 without it)."""
        return len(self.labels.classes) if self.labels is not None else 0
