"""The bound on the number of models per handler (agents/inputs/admission.py), on dict tables.

Each handler runs with ``max_models=2``: models "a" and "b" are admitted, "c"
(and later ones) are refused, "vip" is listed in the policy file and always
admitted without taking a place.
"""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.config import DEFAULT_MAX_MODELS, Settings
from agents.dev import simulate
from agents.drift.handler import DriftHandler
from agents.inputs.admission import Admission, models_key
from agents.inputs.codec import Origin
from agents.kpi.handler import KpiHandler
from agents.operator import reference_build
from agents.poisoning.handler import PoisoningHandler
from agents.policy.agent import PolicyHandler
from agents.runtime.overlay import Overlay
from schemas.errors import DriftlineError
from schemas.policy import Policy, parse_policy
from schemas.reference import ReferenceProfile
from tests.streams.policy.cases import deployed, drift, kpi

T0 = 1_800_000_000 - 1_800_000_000 % 60
POLICY = parse_policy("""
drift: {window: 60s, allowed_lateness: 0s}
kpi: {window: 60s, allowed_lateness: 0s, label_ttl: 10m}
poisoning: {window: 60s, allowed_lateness: 0s}
models:
  vip: {drift: {window: 120s}}
""")
KEY = models_key(0)
Table = dict[bytes, bytes]


def origin(topic: str, model: str | None, offset: int = 0) -> Origin:
    return Origin(topic, 0, offset, model.encode() if model is not None else None)


def predictions(model: str, n: int = 20, seed: int = 1) -> list[dict[str, Any]]:
    return simulate.FraudTraffic(seed=seed, model=model).events(n, start_s=T0, span_s=30)


def batch(events: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"events": events})


KPI_MODELS = b"\x00driftline|kpi-models|0"


def own_keys(table: Table) -> set[bytes]:
    return {k for k in table if k.startswith(b"\x00")}


def admitted(table: Table) -> list[str]:
    return list(orjson.loads(table[KEY]))


def refusal_of(letter: Any, model: str) -> None:
    assert f"model '{model}' is not tracked" in letter.error
    assert "already tracks 2 models on partition 0" in letter.error
    assert "DRIFTLINE_MAX_MODELS=2" in letter.error


# -- the gate itself ---------------------------------------------------------------------


def test_listed_models_are_admitted_without_a_place_and_the_order_is_kept() -> None:
    gate = Admission(agent="drift", max_models=2, listed=["vip"])
    table: Table = {}
    seen = {m: gate.admit(m, origin("p", m), table) for m in ("b", "vip", "a", "c", "b")}
    assert seen == {"b": True, "vip": True, "a": True, "c": False}
    assert admitted(table) == ["b", "a"]  # in admission order; vip is not recorded
    other = Origin("p", 3, 0)  # the limit counts per partition
    assert gate.admit("c", other, table) and table[models_key(3)] == b'["c"]'


def test_zero_tracks_only_the_policy_files_models() -> None:
    gate = Admission(agent="kpi", max_models=0, listed=["vip"])
    table: Table = {}
    assert gate.admit("vip", origin("p", "vip"), table)
    assert not gate.admit("a", origin("p", "a"), table)
    assert table == {}


def test_a_refused_model_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    gate = Admission(agent="drift", max_models=0)
    table: Table = {}
    with caplog.at_level(logging.WARNING, logger="agents.inputs.admission"):
        for offset in range(5):
            for model in ("x", "y"):
                gate.refuse_one(model, b"{}", origin("p", model, offset), table)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "model 'x' is not tracked" in lines[0]


def test_the_setting_comes_from_the_environment_and_is_checked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().max_models == DEFAULT_MAX_MODELS == 100
    monkeypatch.setenv("DRIFTLINE_MAX_MODELS", "7")
    assert Settings.from_env().max_models == 7
    with pytest.raises(DriftlineError, match="DRIFTLINE_MAX_MODELS must be 0 or more"):
        Settings(max_models=-1)


# -- drift ----------------------------------------------------------------------------------


def drift_handler(max_models: int = 2) -> DriftHandler:
    return DriftHandler(policy=POLICY, predictions_topic="predictions", features_topic="features",
                        max_message_bytes=1 << 24, max_models=max_models)


def test_drift_a_model_beyond_the_limit_is_dead_lettered_and_the_rest_counted() -> None:
    handler, table = drift_handler(), {}
    for offset, model in enumerate(("a", "b")):
        assert handler.handle(batch(predictions(model)), origin("predictions", model, offset),
                              table).counted == 20
    raw = batch(predictions("c"))
    out = handler.handle(raw, origin("predictions", "c", 2), table)
    assert out.counted == 0
    (letter,) = out.dead  # one for the message, holding its bytes, not one per event
    refusal_of(letter, "c")
    assert letter.index is None and base64.b64decode(letter.raw) == raw
    assert (letter.agent, letter.topic, letter.offset, letter.key) == ("drift", "predictions",
                                                                      2, "c")
    # A message without a key mixing models: the refused events each get a dead letter,
    # the admitted ones in the same batch are counted.
    mixed = predictions("a", 5, seed=2) + predictions("c", 3, seed=3) + predictions("b", 4)
    out = handler.handle(batch(mixed), origin("predictions", None, 3), table)
    assert out.counted == 9
    assert [d.index for d in out.dead] == [5, 6, 7]
    assert all(d.event["model"] == "c" for d in out.dead)
    refusal_of(out.dead[0], "c")
    assert not any(k.startswith(b"c@") for k in table)
    assert set(handler._monitors) == {"a", "b"}
    assert admitted(table) == ["a", "b"] and own_keys(table) == {KEY}


def test_drift_the_admitted_models_survive_a_restart_and_listed_ones_always_pass() -> None:
    table: Table = {}
    first = drift_handler()
    for offset, model in enumerate(("a", "b")):
        first.handle(batch(predictions(model)), origin("predictions", model, offset), table)
    second = drift_handler()  # a restarted worker: same table, a new handler
    assert second.handle(batch(predictions("c")), origin("predictions", "c", 2), table).dead
    assert second.handle(batch(predictions("a")), origin("predictions", "a", 3),
                         table).counted == 20
    out = second.handle(batch(predictions("vip")), origin("predictions", "vip", 4), table)
    assert out.counted == 20 and out.dead == [] and b"vip@v1" in table
    assert admitted(table) == ["a", "b"]
    assert set(second._monitors) == {"a", "vip"}


def test_drift_models_are_admitted_in_order_of_appearance_through_the_overlay() -> None:
    """As the runner does it: each message against an Overlay, applied afterwards. A
    keyless message with three new models admits the first two it names, whatever the
    process's string hashing, so a replay admits the same ones."""
    handler, table = drift_handler(), {}
    events = predictions("z", 2) + predictions("y", 2) + predictions("x", 2)
    view = Overlay(table)
    out = handler.handle(batch(events), origin("predictions", None), view)
    view.apply(table)
    assert out.counted == 4 and [d.event["model"] for d in out.dead] == ["x", "x"]
    assert admitted(table) == ["z", "y"]
    view = Overlay(table)
    assert handler.handle(batch(predictions("x")), origin("predictions", "x", 1), view).dead
    assert view.changes() == {}  # a refused model writes nothing


def test_drift_a_reference_of_a_model_beyond_the_limit_is_dead_lettered() -> None:
    handler, table = drift_handler(max_models=0), {}
    profile = ReferenceProfile(model="c", model_version="v1", created_at=datetime.now(UTC),
                               source="test", n=1, features={})
    raw = profile.model_dump_json().encode()
    out = handler.handle(raw, origin("references", "c@v1"), table)
    assert out.counted == 0 and len(out.dead) == 1
    assert "model 'c' is not tracked" in out.dead[0].error
    assert table == {}


# -- KPI ------------------------------------------------------------------------------------


def kpi_handler(max_models: int = 2) -> KpiHandler:
    return KpiHandler(policy=POLICY, predictions_topic="predictions", labels_topic="labels",
                      max_message_bytes=1 << 24, max_models=max_models)


def traffic(model: str, n: int = 40) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return simulate.FraudTraffic(seed=1, model=model).events_with_labels(
        n, start_s=T0, span_s=30, label_delay_s=5)


def kpi_models(table: Table) -> set[str]:
    """Models with any state in the KPI table (keys are kind|model|...)."""
    return {k.split(b"|")[1].decode() for k in table if not k.startswith(b"\x00")}


def test_kpi_a_model_beyond_the_limit_is_dead_lettered_and_the_rest_counted() -> None:
    handler, table = kpi_handler(), {}
    offset = 0
    for model in ("a", "b", "c"):
        preds, labels = traffic(model)
        outs = [handler.handle(batch(preds), origin("predictions", model, offset), table),
                handler.handle(batch(labels), origin("labels", model, offset + 1), table)]
        offset += 2
        if model == "c":
            assert [o.counted for o in outs] == [0, 0]
            for o in outs:
                (letter,) = o.dead
                refusal_of(letter, "c")
        else:
            assert [o.counted for o in outs] == [40, 40] and not outs[0].dead
    mixed = traffic("c", 3)[0] + traffic("a", 5)[0]
    out = handler.handle(batch(mixed), origin("predictions", None, offset), table)
    assert out.counted == 5 and [d.index for d in out.dead] == [0, 1, 2]
    assert kpi_models(table) == {"a", "b"}
    assert set(handler._models) == {"a", "b"}
    # the KPI agent's own list of the models with state on the partition (its timer's)
    assert admitted(table) == ["a", "b"] and own_keys(table) == {KEY, KPI_MODELS}
    assert sorted(orjson.loads(table[KPI_MODELS])) == ["a", "b"]


def test_kpi_the_admitted_models_survive_a_restart_and_listed_ones_always_pass() -> None:
    table: Table = {}
    first = kpi_handler()
    for offset, model in enumerate(("a", "b")):
        first.handle(batch(traffic(model)[0]), origin("predictions", model, offset), table)
    second = kpi_handler()
    assert second.handle(batch(traffic("c")[0]), origin("predictions", "c", 2), table).dead
    assert second.handle(batch(traffic("b")[0]), origin("predictions", "b", 3),
                         table).counted == 40
    out = second.handle(batch(traffic("vip")[0]), origin("predictions", "vip", 4), table)
    assert out.counted == 40 and out.dead == []
    assert kpi_models(table) == {"a", "b", "vip"} and admitted(table) == ["a", "b"]
    assert set(second._models) == {"b", "vip"}


# -- poisoning ------------------------------------------------------------------------------


def records(model: str, n: int, seed: int = 2) -> list[dict[str, Any]]:
    preds, labels = simulate.FraudTraffic(seed=seed, model=model).events_with_labels(
        n, start_s=T0, span_s=60, label_delay_s=0)
    return simulate.training_records(labels, preds, source="crm")


@pytest.fixture(scope="module")
def trusted(tmp_path_factory: pytest.TempPathFactory) -> ReferenceProfile:
    path: Path = tmp_path_factory.mktemp("trusted") / "train.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps({**r["features"], "label": r["label"]})
                                for r in records("a", 600, seed=1)))
    return reference_build.build(path, model="a", version="v1",
                                 policy=POLICY.drift_for("a"), trusted_rows=300)


def test_poisoning_a_model_beyond_the_limit_is_dead_lettered_not_screened(
        trusted: ReferenceProfile) -> None:
    def poisoning_handler() -> PoisoningHandler:
        return PoisoningHandler(POLICY, training_topic="training-data",
                                references_topic="references", max_message_bytes=1 << 24,
                                max_models=2)

    handler, table = poisoning_handler(), {}
    for offset, model in enumerate(("a", "b", "c")):
        assert trusted.trusted is not None
        profile = trusted.model_copy(update={
            "model": model, "trusted": trusted.trusted.model_copy(update={"model": model}),
        }).model_dump_json().encode()
        out = handler.handle(profile, origin("references", f"{model}@v1", offset), table)
        assert bool(out.dead) == (model == "c")
    refusal_of(out.dead[0], "c")
    assert {b"t|a", b"t|b"} <= set(table) and b"t|c" not in table
    out = handler.handle(batch(records("c", 30)), origin("training-data", "c", 3), table)
    assert out.counted == 0 and out.routed == [] and len(out.dead) == 1  # nothing retrains
    refusal_of(out.dead[0], "c")
    out = handler.handle(batch(records("a", 30)), origin("training-data", "a", 4), table)
    assert out.counted == 30 and out.dead == [] and out.routed
    out = handler.handle(batch(records("vip", 10)), origin("training-data", "vip", 5), table)
    assert out.counted == 10 and out.dead == []  # held: no trusted set yet
    assert set(handler._guards) == {"a"}

    restarted = poisoning_handler()
    assert restarted.handle(batch(records("c", 5)), origin("training-data", "c", 6), table).dead
    assert restarted.handle(batch(records("b", 5)), origin("training-data", "b", 7),
                            table).counted == 5
    assert admitted(table) == ["a", "b"] and own_keys(table) == {KEY}


# -- policy ---------------------------------------------------------------------------------


def test_policy_reports_of_a_model_beyond_the_limit_are_dead_lettered() -> None:
    table: Table = {}
    settings = Settings(max_models=2)
    handler = PolicyHandler(Policy.model_validate({"models": {"vip": {}}}), b"k" * 32, settings)
    inputs = [("deployments", deployed(model="a")), ("drift", drift(0, model="b")),
              ("kpi", kpi(0, model="c")), ("drift", drift(1, model="a"))]
    outs = [handler.handle(r.model_dump_json().encode(), origin(t, r.model, i), table)
            for i, (t, r) in enumerate(inputs)]
    assert [o.counted for o in outs] == [1, 1, 0, 1]
    refusal_of(outs[2].dead[0], "c")
    restarted = PolicyHandler(Policy.model_validate({"models": {"vip": {}}}), b"k" * 32,
                              settings)
    again = [("drift", drift(2, model="c")), ("drift", drift(2, model="vip"))]
    outs = [restarted.handle(r.model_dump_json().encode(), origin(t, r.model, 10 + i), table)
            for i, (t, r) in enumerate(again)]
    assert [o.counted for o in outs] == [0, 1]
    assert set(table) == {b"p|a", b"p|b", b"p|vip", KEY} and admitted(table) == ["a", "b"]
