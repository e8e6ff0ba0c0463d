"""Reference data means what the events mean: booleans, and which columns are features."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from agents import cli
from agents.drift.handler import DriftHandler
from agents.inputs.codec import Origin
from agents.operator import reference_build
from agents.operator.reference_columns import MIN_ID_VALUES, ColumnRoles
from schemas.policy import DriftPolicy, parse_policy
from schemas.reference import ReferenceProfile
from schemas.reports import DriftReport
from streams.drift.state import PREDICTION, SCORE

T0 = 1_800_000_000 - 1_800_000_000 % 60
MODEL = "m"


def _records(n: int, seed: int) -> list[dict[str, Any]]:
    """Flat training rows: an id, an event time, two features (one boolean), the
    model's outputs and the label."""
    rng = np.random.default_rng(seed)
    return [
        {
            "request_id": f"r{seed}-{i}",
            "ts": T0 + i * 60 / n,
            "amount": round(float(rng.lognormal(3, 1)), 2),
            "is_weekend": bool(rng.random() < 0.3),
            "score": round(float(rng.random()), 4),
            "prediction": int(rng.random() < 0.2),
            "label": int(rng.random() < 0.2),
        }
        for i in range(n)
    ]


def _events(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same rows as the serving app sends them: JSON booleans under ``features``."""
    return [
        {
            "request_id": r["request_id"],
            "model": MODEL,
            "model_version": "v1",
            "ts": r["ts"],
            "prediction": r["prediction"],
            "score": r["score"],
            "features": {"amount": r["amount"], "is_weekend": r["is_weekend"]},
        }
        for r in records
    ]


def _write(path: Path, records: list[dict[str, Any]], *, spell: dict[bool, str]) -> Path:
    if path.suffix == ".csv":
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(records[0]))
            writer.writeheader()
            for r in records:
                writer.writerow({**r, "is_weekend": spell[r["is_weekend"]]})
    else:
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def _first_report(profile: ReferenceProfile) -> DriftReport:
    """A stable stream (the reference's distribution, other draws) judged on ``profile``."""
    handler = DriftHandler(
        policy=parse_policy("drift: {window: 60s, allowed_lateness: 0s}"),
        predictions_topic="predictions",
        features_topic="features",
        references_topic="references",
        max_message_bytes=1 << 24,
    )
    table: dict[bytes, bytes] = {}
    raw = profile.model_dump_json().encode()
    assert handler.handle(raw, Origin("references", 0, 0, b"m@v1"), table).dead == []
    events = _events(_records(3000, seed=2))
    events.append({**events[-1], "request_id": "closer", "ts": T0 + 61})
    reports: list[DriftReport] = []
    for i in range(0, len(events), 500):
        payload = orjson.dumps({"events": events[i : i + 500]})
        reports += handler.handle(payload, Origin("predictions", 0, i, b"m"), table).reports
    (first,) = reports
    assert first.reference.kind == "profile"
    return first


SPELLINGS = [
    ("train.csv", {True: "True", False: "False"}),  # Python's str(), pandas' to_csv
    ("train.csv", {True: "TRUE", False: "FALSE"}),  # spreadsheets, R
    ("train.csv", {True: "true", False: "false"}),
    ("train.jsonl", {}),  # JSON booleans
]


@pytest.mark.parametrize(("name", "spell"), SPELLINGS)
def test_a_boolean_feature_of_a_stable_stream_does_not_drift(
    tmp_path: Path, name: str, spell: dict[bool, str]
) -> None:
    data = _write(tmp_path / name, _records(4000, seed=1), spell=spell)
    profile = reference_build.build(data, model=MODEL, version="v1", policy=DriftPolicy())
    flag = profile.features["is_weekend"]
    assert (flag.kind, sorted(flag.known)) == ("categorical", ["false", "true"])
    report = _first_report(profile)
    judged = report.features["is_weekend"]
    assert judged.status == "ok", judged.reason
    assert judged.metrics["psi"] < 0.01
    assert report.status == "ok"


def test_a_csv_boolean_column_reads_as_the_json_booleans_do(tmp_path: Path) -> None:
    records = _records(500, seed=3)
    csv_records = reference_build.read_records(
        _write(tmp_path / "a.csv", records, spell={True: "True", False: "False"})
    )
    jsonl_records = reference_build.read_records(_write(tmp_path / "a.jsonl", records, spell={}))
    assert [r["is_weekend"] for r in csv_records] == [r["is_weekend"] for r in jsonl_records]
    assert {type(r["is_weekend"]) for r in csv_records} == {bool}


def test_csv_booleans_with_blanks_and_text_that_is_not_boolean(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_text("flag,word,x\nTrue,True,1\n,maybe,2\nfalse,False,3\n")
    rows = reference_build.read_records(path)
    assert [r["flag"] for r in rows] == [True, None, False]
    assert [r["word"] for r in rows] == ["True", "maybe", "False"]  # not all boolean: text


def test_a_csv_row_with_more_fields_than_the_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(
        reference_build.ReferenceDataError,
        match=r"c\.csv, line 3: 3 fields "
        "where the header has 2",
    ):
        reference_build.read_records(path)


def test_a_profile_published_before_with_python_spelt_booleans_is_read_canonically(
    tmp_path: Path,
) -> None:
    """Profiles built from CSV by an older driftline hold ``True``/``False``: the drift
    agent reads them as ``true``/``false``, so a stable stream does not drift on them."""
    data = _write(
        tmp_path / "train.csv", _records(4000, seed=1), spell={True: "True", False: "False"}
    )
    profile = reference_build.build(data, model=MODEL, version="v1", policy=DriftPolicy())
    old = orjson.loads(profile.model_dump_json())
    feature = old["features"]["is_weekend"]
    old_spelling = {"true": "True", "false": "False"}
    feature["bins"] = [old_spelling[b] for b in feature["bins"]]
    feature["known"] = sorted(old_spelling[k] for k in feature["known"])
    read = ReferenceProfile.model_validate(old)
    assert read.features["is_weekend"] == profile.features["is_weekend"]
    assert _first_report(read).features["is_weekend"].status == "ok"


# -- which columns are features ---------------------------------------------------------------


def test_label_id_timestamp_and_outputs_are_not_features(tmp_path: Path) -> None:
    data = _write(tmp_path / "train.jsonl", _records(1000, seed=1), spell={})
    built = reference_build.profile_file(
        data, model=MODEL, version="v1", policy=DriftPolicy(), roles=ColumnRoles()
    )
    profile = built.profile
    assert sorted(profile.features) == [PREDICTION, SCORE, "amount", "is_weekend"]
    assert built.split.left_out == {"request_id": "id", "ts": "timestamp", "label": "label"}
    assert profile.trusted is not None and sorted(profile.trusted.features) == [
        "amount",
        "is_weekend",
    ]
    assert len(profile.trusted.labels) == 1000  # the guard still gets the labels
    assert built.describe() == (
        "profiled: amount, is_weekend; model outputs: score (@score), "
        "prediction (@prediction); left out: request_id (id), "
        "ts (timestamp), label (label)"
    )


def _renamed(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Other names for every role; the event time as ISO text, the id as plain text."""
    return [
        {
            "txn": f"t{i:05d}",
            "when": f"2026-12-03T10:{i // 60 % 60:02d}:{i % 60:02d}Z",
            "session": r["request_id"],
            "amount": r["amount"],
            "is_weekend": r["is_weekend"],
            "p_fraud": r["score"],
            "decision": r["prediction"],
            "is_fraud": r["label"],
        }
        for i, r in enumerate(records)
    ]


def test_columns_named_on_the_command_line_or_found_by_their_values_are_left_out(
    tmp_path: Path,
) -> None:
    data = _write(tmp_path / "train.jsonl", _renamed(_records(1000, seed=1)), spell={})
    roles = ColumnRoles(
        label="is_fraud", score="p_fraud", prediction="decision", ids=frozenset({"session"})
    )
    built = reference_build.profile_file(
        data, model=MODEL, version="v1", policy=DriftPolicy(), roles=roles
    )
    assert sorted(built.profile.features) == [PREDICTION, SCORE, "amount", "is_weekend"]
    assert built.split.left_out == {
        "is_fraud": "label",
        "session": "id",
        "txn": "id",
        "when": "timestamp",
    }
    # one numeric and one categorical feature (encoded by frequency): a joint signal
    assert built.profile.multivariate is not None
    assert built.profile.multivariate.names == ["amount", "is_weekend"]
    assert built.profile.trusted is not None and len(built.profile.trusted.labels) == 1000
    # with fewer values than MIN_ID_VALUES, all-different text may be a category
    few = _write(tmp_path / "few.jsonl", _renamed(_records(MIN_ID_VALUES - 1, seed=1)), spell={})
    kept = reference_build.profile_file(
        few, model=MODEL, version="v1", policy=DriftPolicy(), roles=roles
    )
    assert "txn" in kept.profile.features and kept.split.left_out["when"] == "timestamp"


def test_keep_columns_profiles_what_the_rules_would_leave_out(tmp_path: Path) -> None:
    data = _write(tmp_path / "train.jsonl", _records(300, seed=1), spell={})
    built = reference_build.profile_file(
        data,
        model=MODEL,
        version="v1",
        policy=DriftPolicy(),
        roles=ColumnRoles(keep=frozenset({"ts"})),
    )
    assert "ts" in built.profile.features and "ts" not in built.split.left_out


def test_reference_build_prints_what_it_profiled_and_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = _renamed(_records(300, seed=1))
    path = tmp_path / "train.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    code = cli.main(
        [
            "reference",
            "build",
            "--model",
            MODEL,
            "--version",
            "v1",
            "--data",
            str(path),
            "--no-publish",
            "--label-column",
            "is_fraud",
            "--score-column",
            "p_fraud",
            "--prediction-column",
            "decision",
            "--id-columns",
            "session",
            "--timestamp-column",
            "when",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == (
        "profiled: amount, is_weekend; model outputs: p_fraud (@score), "
        "decision (@prediction); left out: txn (id), when (timestamp), "
        "session (id), is_fraud (label)"
    )
