"""`driftline reference build` and the drift handler's use of a ReferenceProfile."""

from __future__ import annotations

import csv
from pathlib import Path

import orjson
import pytest

from agents import reference_build, simulate
from agents.codec import Origin
from agents.drift_handler import REFERENCE_SUFFIX, DriftHandler
from schemas.policy import DriftPolicy, parse_policy
from schemas.reference import ReferenceProfile
from streams.drift.monitor import PREDICTION, SCORE
from streams.drift.reference import profile_features

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
