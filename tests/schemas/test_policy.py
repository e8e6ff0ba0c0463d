"""The policy file (schemas/policy.py) and ``driftline policy check``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agents import cli
from schemas.errors import DriftlineError
from schemas.policy import (
    DriftPolicy,
    Policy,
    PolicyError,
    load_policy,
    parse_duration_ms,
    parse_policy,
)

GOOD = """
drift:
  window: 5m
  allowed_lateness: 30s
  bins: 20
  top_k: 5
  psi_warn: 0.15
  psi_drift: 0.3
  min_reference_events: 500
  min_window_events: 100
  max_open_windows: 3
  max_features: 50
models:
  fraud-detector:
    drift:
      window: 1h
      psi_drift: 0.5
  churn: {}
"""


@pytest.mark.parametrize(
    ("value", "expected_ms"),
    [
        ("30s", 30_000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("250ms", 250),
        ("7d", 604_800_000),
        ("1.5h", 5_400_000),
        (" 10 s ", 10_000),
        ("0s", 0),
        (12, 12_000),
        (1.5, 1_500),
        (0, 0),
    ],
)
def test_parse_duration_ms(value: Any, expected_ms: int) -> None:
    assert parse_duration_ms(value) == expected_ms


@pytest.mark.parametrize(
    "value", ["5x", "", "-1s", "s", "5", "5 mins", "1h30m", True, False, None, [], {}, -1, -0.5]
)
def test_parse_duration_ms_refuses(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration_ms(value)


def test_parse_policy_reads_every_value() -> None:
    policy = parse_policy(GOOD)
    # Durations are given as strings: a plain number would be read as seconds.
    assert policy.drift == DriftPolicy(
        window="5m",
        allowed_lateness="30s",
        bins=20,
        top_k=5,
        psi_warn=0.15,
        psi_drift=0.3,
        min_reference_events=500,
        min_window_events=100,
        max_open_windows=3,
        max_features=50,
    )
    assert (policy.drift.window, policy.drift.allowed_lateness) == (300_000, 30_000)
    assert sorted(policy.models) == ["churn", "fraud-detector"]


def test_an_empty_document_is_refused_and_no_policy_gives_defaults() -> None:
    # an empty file would silently judge nothing the operator meant
    # (tests/schemas/test_policy_targets.py); the defaults are for starting without one
    for text in ("", "# nothing yet\n"):
        with pytest.raises(PolicyError, match="the policy is empty"):
            parse_policy(text)
    assert Policy().drift.window == 300_000


def test_per_model_override() -> None:
    policy = parse_policy(GOOD)
    fraud = policy.drift_for("fraud-detector")
    assert fraud.window == 3_600_000
    assert fraud.psi_drift == 0.5
    # An override section is complete on its own: unset fields take the defaults.
    assert fraud.allowed_lateness == DriftPolicy().allowed_lateness
    # A model without a drift section, and an unknown model, use the global section.
    assert policy.drift_for("churn") is policy.drift
    assert policy.drift_for("unknown") is policy.drift


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("drift: {window: 5x}", "drift.window"),
        ("drift: {allowed_lateness: -1s}", "drift.allowed_lateness"),
        ("drift: {window: 0s}", "drift.window"),
        ("drift: {bins: 1}", "drift.bins"),
        ("drift: {psi_drift: 0}", "drift.psi_drift"),
        ("drift: {min_reference_events: 5}", "drift.min_reference_events"),
        ("models: {fraud: {drift: {window: soon}}}", "models.fraud.drift.window"),
    ],
)
def test_bad_value_names_field_and_source(text: str, where: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, source="prod.yaml")
    message = str(info.value)
    assert message.startswith("prod.yaml:1: "), message
    assert where in message


def test_psi_warn_above_psi_drift_is_refused() -> None:
    expected = r"^p\.yaml:1: drift: .*psi_warn \(0\.5\) must not exceed"
    with pytest.raises(PolicyError, match=expected):
        parse_policy("drift: {psi_warn: 0.5, psi_drift: 0.2}", source="p.yaml")
    assert parse_policy("drift: {psi_warn: 0.2, psi_drift: 0.2}").drift.psi_warn == 0.2


def test_bad_duration_message_says_what_a_duration_looks_like() -> None:
    with pytest.raises(PolicyError, match=r"drift\.window: .*'5x' is not a duration like 30s"):
        parse_policy("drift: {window: 5x}", source="p.yaml")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("drift: {windw: 5m}", "drift.windw"),
        ("drfit: {window: 5m}", "drfit"),
        ("models: {m: {drift: {window: 5m}, kpis: {}}}", "models.m.kpis"),
        ("kpi: {targets: {roc_auc: {minimum: 0.8}}}", "kpi.targets.roc_auc.minimum"),
    ],
)
def test_unknown_field_is_refused_by_name(text: str, where: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, source="p.yaml")
    assert where in str(info.value)
    assert "Extra inputs are not permitted" in str(info.value)


@pytest.mark.parametrize("text", ["- drift\n- kpi\n", "just a string", "42"])
def test_top_level_must_be_a_mapping(text: str) -> None:
    with pytest.raises(PolicyError, match=r"^p\.yaml: the top level must be a mapping"):
        parse_policy(text, source="p.yaml")


@pytest.mark.parametrize("text", ["drift: [", "drift: {window: 5m", "a: b: c"])
def test_invalid_yaml_is_refused(text: str) -> None:
    with pytest.raises(PolicyError, match=r"^p\.yaml: not valid YAML"):
        parse_policy(text, source="p.yaml")


def test_policy_error_is_a_driftline_error() -> None:
    assert issubclass(PolicyError, DriftlineError)


def test_load_policy_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    assert load_policy(str(path)) == parse_policy(GOOD)


def test_load_policy_names_the_file_on_a_bad_value(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("drift: {window: 5x}\n")
    with pytest.raises(PolicyError) as info:
        load_policy(str(path))
    assert str(info.value).startswith(f"{path}:1: drift.window")


def test_load_policy_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "policy.yaml"
    with pytest.raises(PolicyError) as info:
        load_policy(str(path))
    assert str(path) in str(info.value)
    assert "cannot read policy file" in str(info.value)


def test_cli_policy_check_good_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    assert cli.main(["policy", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "valid" in out
    assert "fraud-detector" in out


@pytest.mark.parametrize("text", ["drift: {window: 5x}\n", "drift: {windw: 5m}\n", "- x\n"])
def test_cli_policy_check_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    assert cli.main(["policy", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("driftline: ")
    assert str(path) in err


def test_cli_policy_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "missing.yaml"
    assert cli.main(["policy", "check", str(path)]) == 2
    assert str(path) in capsys.readouterr().err


@pytest.mark.parametrize("text", ["drift: {window: .inf}", "drift: {window: .nan}",
                                  "drift: {allowed_lateness: -.inf}"])
def test_non_finite_durations_are_refused_naming_the_field(text: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, source="p.yaml")
    assert "p.yaml:1: drift." in str(info.value)
    assert "finite" in str(info.value)


def test_policy_dump_reloads_unchanged() -> None:
    policy = parse_policy(GOOD)
    again = Policy.model_validate(policy.model_dump())
    assert again == policy
    assert policy.model_dump()["drift"]["window"] == "5m"
    assert Policy.model_validate_json(policy.model_dump_json()) == policy


def test_policy_json_schema_describes_durations_as_strings_or_seconds() -> None:
    window = Policy.model_json_schema()["$defs"]["DriftPolicy"]["properties"]["window"]
    assert {"type": "number"} in window["anyOf"]
    assert any(option.get("type") == "string" for option in window["anyOf"])


def test_errors_name_the_line_of_the_bad_value() -> None:
    text = """
drift:
  window: 5m
models:
  fraud:
    decisions:
      rollback:
        alpha: 2
      delivery:
        canary_steps: [0.5, 0.1]
"""
    with pytest.raises(PolicyError) as info:
        parse_policy(text, source="p.yaml")
    message = str(info.value)
    assert "p.yaml:8: models.fraud.decisions.rollback.alpha" in message
    assert "p.yaml:10: models.fraud.decisions.delivery" in message
    assert "canary_steps must increase" in message


def test_decisions_section_defaults_and_per_model_override() -> None:
    policy = parse_policy("""
decisions:
  cooldown: 30m
  retrain: {drift_windows: 4}
models:
  loans:
    decisions: {risk_tier: high, max_commands_per_hour: 2}
""")
    assert policy.decisions_for("fraud").cooldown == 1_800_000
    assert policy.decisions_for("fraud").retrain.drift_windows == 4
    assert not policy.decisions_for("fraud").needs_approval
    loans = policy.decisions_for("loans")
    assert loans.needs_approval and loans.max_commands_per_hour == 2
    # a model override replaces the whole section (as drift and kpi do)
    assert loans.retrain.drift_windows == 3
    assert parse_policy(policy.model_dump_json()) == policy
