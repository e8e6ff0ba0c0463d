"""A small synthetic world for the poisoning guard's tests, and a check that it is sane.

Two classes (30 % positive) in six numeric features, the first three shifted by
``SHIFT`` standard deviations for the positives, the rest noise, plus one
categorical feature. The trusted set and the streams are drawn from the same
distribution with different seeds; attacks are made explicitly in each test.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from schemas.events import TrainingRecord
from schemas.poisoning import PoisoningPolicy, TrustedSet
from schemas.reference import ReferenceFeatureProfile, ReferenceProfile
from streams.batch import columns_from_rows
from streams.drift.reference import profile_features
from streams.poisoning.guard import PoisoningGuard
from streams.poisoning.trusted import sample_trusted

MODEL = "fraud"
HOUR_S = 3600.0
T0 = 1_699_999_200.0  # on the hour (epoch seconds)
SHIFT = 3.0
NUMERIC = [f"x{i}" for i in range(6)]
CHANNELS = ["app", "pos", "web"]

Row = dict[str, float | str | None]


def draw(seed: int, n: int) -> tuple[list[Row], list[float]]:
    """``n`` clean rows and their labels."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(float)
    x = rng.normal(0.0, 1.0, (n, 6))
    x[:, :3] += SHIFT * y[:, None]
    channel = rng.choice(CHANNELS, size=n)
    rows: list[Row] = []
    for i in range(n):
        row: Row = {name: float(x[i, j]) for j, name in enumerate(NUMERIC)}
        row["channel"] = str(channel[i])
        rows.append(row)
    return rows, y.tolist()


def trusted(seed: int = 1, n: int = 800) -> TrustedSet:
    rows, labels = draw(seed, n)
    return sample_trusted(MODEL, columns_from_rows(rows), labels, max_rows=5000,
                          source="synthetic")


def profile(seed: int = 1, n: int = 800) -> ReferenceProfile:
    rows, _ = draw(seed, n)
    features = profile_features(columns_from_rows(rows), bins=10, fine_bins=100, top_k=20)
    return ReferenceProfile.model_validate({
        "model": MODEL,
        "model_version": "v1",
        "created_at": "2023-11-14T22:00:00Z",
        "source": "synthetic",
        "n": n,
        "features": {k: ReferenceFeatureProfile.model_validate(v) for k, v in features.items()},
    })


def guard(policy: PoisoningPolicy | None = None, *, with_profile: bool = True) -> PoisoningGuard:
    return PoisoningGuard(policy or PoisoningPolicy(), trusted(),
                          profile() if with_profile else None)


def records(
    rows: Sequence[Row],
    labels: Sequence[float | str | bool],
    *,
    source: str | Sequence[str] = "s0",
    start: float = T0,
    span: float = 600.0,
    prefix: str = "r",
) -> list[TrainingRecord]:
    """Training records, their event times spread evenly over ``span`` seconds."""
    n = len(rows)
    sources = [source] * n if isinstance(source, str) else list(source)
    return [
        TrainingRecord.model_validate({
            "record_id": f"{prefix}{i}",
            "model": MODEL,
            "ts": start + span * i / max(n, 1),
            "source": sources[i],
            "features": dict(rows[i]),
            "label": labels[i],
        })
        for i in range(n)
    ]


def spread(rows: Sequence[Row], labels: Sequence[float], sources: int, **kwargs: object
           ) -> list[TrainingRecord]:
    """Records dealt round-robin to ``s0`` .. ``s{sources-1}``."""
    names = [f"s{i % sources}" for i in range(len(rows))]
    return records(rows, labels, source=names, **kwargs)  # type: ignore[arg-type]


def strength(row: Row) -> float:
    """How positive a row looks: the sum of its three shifted features."""
    return sum(float(row[f] or 0.0) for f in NUMERIC[:3])


def flip(labels: Sequence[float]) -> list[float]:
    return [1.0 - v for v in labels]


def weakly_inconsistent(n: int) -> tuple[list[Row], list[float]]:
    """Clean rows whose label the trusted data finds odd but not impossible
    (p-value between the strong level 0.005 and the weak one 0.05)."""
    probe = guard(PoisoningPolicy(source_check=False, duplicate_check=False))
    rows, labels = draw(16, 20_000)
    verdicts = probe.screen(records(rows, labels, span=60.0))
    picked = [i for i, v in enumerate(verdicts) if 0.006 < v.scores["label_p"] <= 0.05][:n]
    assert len(picked) == n
    return [rows[i] for i in picked], [labels[i] for i in picked]


def test_the_synthetic_world_is_learnable_but_not_trivial() -> None:
    rows, labels = draw(5, 2000)
    y = np.asarray(labels)
    assert 0.25 < y.mean() < 0.35
    score = np.array([strength(r) for r in rows])
    accuracy = float(np.mean((score > 1.5 * SHIFT) == (y == 1)))
    assert 0.97 < accuracy < 0.9999  # some overlap: a few clean labels look inconsistent
