"""`driftline reference build` and the drift handler's use of a ReferenceProfile."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import orjson
import pytest

from agents.dev import simulate
from agents.drift.handler import REFERENCE_SUFFIX, DriftHandler
from agents.inputs.codec import Origin
from agents.operator import reference_build
from schemas.policy import DriftPolicy, parse_policy
from schemas.reference import ReferenceProfile
from schemas.reports import DriftReport
from streams.batch import FeatureBatch
from streams.drift.monitor import DriftMonitor
from streams.drift.reference import profile_features, profile_multivariate
from streams.drift.state import (
    MULTIVARIATE,
    PREDICTION,
    SCORE,
    VersionState,
    reference_from_profile,
)

T0 = 1_800_000_000 - 1_800_000_000 % 60


def _events(n: int = 4000, seed: int = 9, shifted: bool = False) -> list[dict]:
    return simulate.FraudTraffic(seed=seed).events(n, start_s=T0, span_s=60, shifted=shifted)


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in _events()))
    return path


def test_jsonl_profile_bins_every_feature_and_the_outputs(jsonl: Path) -> None:
    profile = reference_build.build(
        jsonl, model="fraud-detector", version="v1", policy=DriftPolicy()
    )
    assert profile.n == 4000 and profile.source == "train.jsonl"
    assert len(profile.features) == 27  # 25 features, the score and the prediction
    assert profile.features[SCORE].kind == "numeric"
    assert profile.features["amount"].kind == "numeric"
    assert profile.features["channel"].kind == "categorical"
    assert sum(profile.features["amount"].counts) == 4000
    assert max(profile.features["amount"].groups) + 1 == 10
    # the same binning as the kernel on the same columns
    events = _events()
    expected = profile_features(
        {"amount": [e["features"]["amount"] for e in events]}, bins=10, fine_bins=100, top_k=20
    )
    assert profile.features["amount"].model_dump() == expected["amount"]
    assert ReferenceProfile.model_validate_json(profile.model_dump_json()) == profile


def test_csv_profile_reads_numbers_text_and_blanks(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["request_id", "amount", "channel", "score"])
        for i in range(300):
            writer.writerow(
                [f"r{i}", "" if i % 10 == 0 else i * 1.5, "web" if i % 3 else "app", i / 300]
            )
    profile = reference_build.build(path, model="m", version="v", policy=DriftPolicy())
    assert sorted(profile.features) == [SCORE, "amount", "channel"]  # ids are left out
    assert profile.features["amount"].missing == 30
    assert profile.features["channel"].bins == ["web", "app"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, "no such file"),
        ("data.txt", b"x", "unknown format '.txt'"),
        ("bad.jsonl", b'{"a": 1}\n{"a": \n', "bad.jsonl, line 2: not valid JSON"),
        ("list.jsonl", b"[1, 2]\n", "line 1: not a JSON object"),
        ("empty.jsonl", b"\n", "no records"),
        ("ids.csv", b"request_id,ts\nr1,5\n", "no feature column with values"),
    ],
)
def test_unusable_data_is_refused_with_the_reason(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(reference_build.ReferenceDataError, match=message.replace("[", r"\[")):
        reference_build.build(path, model="m", version="v", policy=DriftPolicy())


def _handler() -> DriftHandler:
    policy = parse_policy("drift: {window: 60s, allowed_lateness: 0s}")
    return DriftHandler(
        policy=policy,
        predictions_topic="predictions",
        features_topic="features",
        references_topic="references",
        max_message_bytes=1 << 24,
    )


def test_a_profile_replaces_the_warm_up(jsonl: Path) -> None:
    handler = _handler()
    table: dict[bytes, bytes] = {}
    profile = reference_build.build(
        jsonl, model="fraud-detector", version="v1", policy=DriftPolicy()
    )
    out = handler.handle(
        profile.model_dump_json().encode(), Origin("references", 0, 0, b"fraud-detector@v1"), table
    )
    assert out.dead == [] and b"fraud-detector@v1" + REFERENCE_SUFFIX in table

    # The very first window is judged against the profile: no warm-up.
    shifted = simulate.FraudTraffic(seed=4).events(3000, start_s=T0, span_s=60, shifted=True)
    closer = simulate.FraudTraffic(seed=5).events(1, start_s=T0 + 61, span_s=1)
    reports = []
    for i, payload in enumerate(simulate.batches(shifted + closer, 500)):
        reports += handler.handle(
            payload, Origin("predictions", 0, i, b"fraud-detector"), table
        ).reports
    (first,) = reports
    assert first.reference.kind == "profile"
    assert "train.jsonl" in first.reference.note
    flagged = {n for n, f in first.features.items() if f.status != "ok"}
    assert flagged == set(simulate.SHIFTED)
    assert PREDICTION.lstrip("@") not in first.features


def test_an_invalid_profile_is_dead_lettered() -> None:
    out = _handler().handle(b'{"model": "m"}', Origin("references", 0, 7, b"m@v"), {})
    (dead,) = out.dead
    assert dead.offset == 7 and "not a valid ReferenceProfile" in dead.error
    assert "driftline reference build" in dead.error


# -- the multivariate part -------------------------------------------------------------------


def test_the_profile_carries_the_multivariate_part(jsonl: Path) -> None:
    profile = reference_build.build(
        jsonl, model="fraud-detector", version="v1", policy=DriftPolicy()
    )
    part = profile.multivariate
    assert part is not None
    outputs = (SCORE, PREDICTION)
    numeric = sorted(
        n for n, f in profile.features.items() if f.kind == "numeric" and n not in outputs
    )
    categorical = sorted(
        n for n, f in profile.features.items() if f.kind == "categorical" and n not in outputs
    )[:4]
    # the model's outputs are not in it; categorical features follow the numeric ones
    assert len(numeric) == 20 and part.names[:20] == numeric
    assert part.names[20:] == [n for n in categorical if n in part.names]
    assert set(part.categories) == set(part.names[20:])
    assert part.limits is not None and len(part.limits) == len(part.names)
    assert 1 <= len(part.components) < len(part.names) and part.explained >= 0.65
    assert (part.n_fit, part.n_baseline) == (2000, 2000)  # even rows fit, odd rows measure
    columns = reference_build.columns_of(reference_build.read_records(jsonl))
    expected = profile_multivariate(
        columns, exclude=frozenset({SCORE, PREDICTION}), max_features=30, variance=0.65
    )
    assert part.model_dump() == expected
    assert ReferenceProfile.model_validate_json(profile.model_dump_json()) == profile
    off = reference_build.build(
        jsonl, model="m", version="v", policy=DriftPolicy(multivariate=False)
    )
    assert off.multivariate is None


def test_features_the_policy_ignores_are_left_out_of_the_multivariate_part(
    jsonl: Path,
) -> None:
    policy = DriftPolicy(features={"amount": {"ignore": True}})
    profile = reference_build.build(jsonl, model="m", version="v", policy=policy)
    assert profile.multivariate is not None
    assert "amount" not in profile.multivariate.names
    assert "amount" in profile.features  # still profiled, so still reported
    default = reference_build.build(jsonl, model="m", version="v", policy=DriftPolicy())
    assert default.multivariate is not None and "amount" in default.multivariate.names
    assert profile.multivariate.names == [n for n in default.multivariate.names if n != "amount"]


def test_profiles_without_the_multivariate_part_still_load(jsonl: Path) -> None:
    profile = reference_build.build(jsonl, model="m", version="v", policy=DriftPolicy())
    old = orjson.loads(profile.model_dump_json())
    del old["multivariate"]
    assert ReferenceProfile.model_validate(old).multivariate is None
    assert reference_from_profile(ReferenceProfile.model_validate(old))["multivariate"] is None
    bad = orjson.loads(profile.model_dump_json())
    bad["multivariate"]["sds"] = bad["multivariate"]["sds"][:-1]
    with pytest.raises(ValueError, match="one value per name"):
        ReferenceProfile.model_validate(bad)


D = 20
NAMES = [f"x{i:02d}" for i in range(D)]


def _rows(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    """x00 and x01 correlated ``rho``; every marginal N(0, 1)."""
    x = rng.normal(size=(n, D))
    x[:, 1] = rho * x[:, 0] + np.sqrt(1 - rho**2) * x[:, 1]
    return x


def _window_batches(x: np.ndarray, window: int) -> list[FeatureBatch]:
    ts = window * 60_000 + np.arange(x.shape[0], dtype=np.int64) * (60_000 // x.shape[0])
    return [
        FeatureBatch(
            ts_ms=ts[lo : lo + 500], columns={n: x[lo : lo + 500, i] for i, n in enumerate(NAMES)}
        )
        for lo in range(0, x.shape[0], 500)
    ]


def _judge(
    monitor: DriftMonitor, state: VersionState, windows: list[np.ndarray], first: int
) -> list[DriftReport]:
    reports: list[DriftReport] = []
    closer = FeatureBatch(
        ts_ms=np.array([(first + len(windows)) * 60_000], dtype=np.int64), columns={"x00": [0.0]}
    )
    batches = [b for i, x in enumerate(windows) for b in _window_batches(x, first + i)]
    for batch in [*batches, closer]:
        state = monitor.update(state, batch)
        state, closed = monitor.close_ready(state)
        reports.extend(closed)
    return reports


def test_a_profile_judges_the_joint_distribution_as_the_warm_up_does(tmp_path: Path) -> None:
    rng = np.random.default_rng(21)
    training = _rows(rng, 6000, 0.8)
    path = tmp_path / "train.jsonl"
    records = [dict(zip(NAMES, row, strict=True)) for row in training.tolist()]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    policy = DriftPolicy(window=60, allowed_lateness=0, min_reference_events=6000)
    published = reference_build.build(path, model="m", version="v1", policy=policy)
    profile = ReferenceProfile.model_validate_json(published.model_dump_json())  # via Kafka

    # The warm-up on the same rows, in the same order, builds the same PCA to the bit.
    monitor = DriftMonitor(policy=policy)
    later = [_rows(rng, 5000, rho) for rho in (0.8, 0.8, -0.8, -0.8)]
    warm = monitor.initialize("m", "v1")
    for batch in _window_batches(training, 0):
        warm = monitor.update(warm, batch)
    from_profile = reference_from_profile(profile)
    warmed = _judge(monitor, warm, later, 1)
    assert warmed[0].reference.kind == "warmup"
    assert profile.multivariate is not None
    assert from_profile["multivariate"] == profile.multivariate.model_dump()

    state = monitor.initialize("m", "v1")
    state["reference"] = from_profile
    judged = _judge(monitor, state, later, 1)
    assert judged[0].reference.kind == "profile"
    # the window right after the warm-up is not judged jointly; with a profile it is
    assert warmed[1].multivariate is None and judged[0].multivariate is not None
    assert [r.multivariate for r in judged[1:]] == [r.multivariate for r in warmed[2:]]
    statuses = [(r.status, r.drifted_features) for r in judged]
    assert statuses == [
        ("ok", []),
        ("ok", []),
        ("warn", [MULTIVARIATE]),
        ("drift", [MULTIVARIATE]),
    ]
    assert all(f.status == "ok" for r in judged for f in r.features.values())
