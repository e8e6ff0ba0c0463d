"""Per-feature drift settings in the policy file (``drift.features``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agents import cli
from schemas.policy import (
    DriftPolicy,
    FeatureThresholds,
    Policy,
    PolicyError,
    load_policy,
    parse_policy,
)

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
drift:
  psi_warn: 0.05
  features:
    amount: {psi_warn: 0.1, psi_drift: 0.3}     # a noisy feature
    request_hour: {ignore: true}                # never judged (still counted and reported)
    country: {consecutive: 3}
    prediction.score: {psi_drift: 0.25}
models:
  fraud-detector:
    drift:
      psi_drift: 0.4
      features:
        amount: {psi_warn: 0.2}
  churn: {}
"""


def test_features_override_only_what_they_name() -> None:
    drift = parse_policy(GOOD).drift
    assert drift.for_feature("amount") == FeatureThresholds(0.1, 0.3, 2)
    assert drift.for_feature("request_hour") == FeatureThresholds(0.05, 0.2, 2, ignore=True)
    assert drift.for_feature("country") == FeatureThresholds(0.05, 0.2, 3)
    assert drift.for_feature("prediction.score") == FeatureThresholds(0.05, 0.25, 2)
    # any other name: the section's settings
    assert drift.for_feature("age") == FeatureThresholds(0.05, 0.2, 2)
    assert drift.ignored() == frozenset({"request_hour"})


def test_model_override_has_its_own_features() -> None:
    policy = parse_policy(GOOD)
    fraud = policy.drift_for("fraud-detector")
    # unset settings of a feature take the model's section (psi_drift 0.4) ...
    assert fraud.for_feature("amount") == FeatureThresholds(0.2, 0.4, 2)
    # ... and, as for every setting, the model's section replaces the top-level one
    # whole: its features are the only ones that apply to the model.
    assert fraud.for_feature("request_hour") == FeatureThresholds(0.05, 0.4, 2)
    assert fraud.ignored() == frozenset()
    assert policy.drift_for("churn").for_feature("amount") == FeatureThresholds(0.1, 0.3, 2)
    assert policy.drift_for("unknown").for_feature("country").consecutive == 3


def test_without_features_nothing_changes() -> None:
    assert DriftPolicy().features == {}
    assert parse_policy("drift: {features: {}}") == Policy()
    assert DriftPolicy().for_feature("x") == FeatureThresholds(0.05, 0.2, 2)
    drift = parse_policy("drift: {psi_warn: 0.1, psi_drift: 0.3, consecutive: 4}").drift
    assert drift.for_feature("x") == FeatureThresholds(0.1, 0.3, 4)


def test_features_round_trip() -> None:
    policy = parse_policy(GOOD)
    assert Policy.model_validate(policy.model_dump()) == policy
    assert parse_policy(policy.model_dump_json()) == policy


def test_names_never_seen_are_fine_and_ignore_with_thresholds_is_kept() -> None:
    drift = parse_policy("drift:\n  features:\n    gone: {ignore: true, psi_warn: 0.1}\n").drift
    assert drift.for_feature("gone") == FeatureThresholds(0.1, 0.2, 2, ignore=True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "drift:\n  features:\n    amount: {psi_warn: -0.1}\n",
            "policy.yaml:3: drift.features.amount.psi_warn: Input should be greater than 0",
        ),
        (
            "drift:\n  features:\n    amount:\n      psi_warn: high\n",
            "policy.yaml:4: drift.features.amount.psi_warn: Input should be a valid number",
        ),
        (
            "drift:\n  features:\n    amount: {psi_warm: 0.1}\n",
            "policy.yaml:3: drift.features.amount.psi_warm: Extra inputs are not permitted",
        ),
        (
            # a per-model setting that cannot differ per feature
            "drift:\n  features:\n    amount:\n      false_alarm_rate: 0.01\n",
            "policy.yaml:4: drift.features.amount.false_alarm_rate: Extra inputs are not permitted",
        ),
        (
            "drift:\n  features:\n    country: {consecutive: 0}\n",
            "policy.yaml:3: drift.features.country.consecutive: Input should be greater than "
            "or equal to 1",
        ),
        (
            "drift:\n  features:\n    country: {consecutive: 1.5}\n",
            "policy.yaml:3: drift.features.country.consecutive: Input should be a valid integer",
        ),
        (
            "drift:\n  features:\n    request_hour: {ignore: maybe}\n",
            "policy.yaml:3: drift.features.request_hour.ignore: Input should be a valid boolean",
        ),
        (
            "drift:\n  features:\n    amount: 0.1\n",
            "policy.yaml:3: drift.features.amount: Input should be a valid dictionary",
        ),
        (
            "drift:\n  features: [amount]\n",
            "policy.yaml:2: drift.features: Input should be a valid dictionary",
        ),
        (
            # the feature's psi_warn against the section's psi_drift
            "drift:\n  psi_drift: 0.2\n  features:\n    amount: {psi_warn: 0.3}\n",
            "policy.yaml:4: drift.features.amount.psi_warn: psi_warn (0.3) must not exceed "
            "psi_drift (0.2, the section's)",
        ),
        (
            "drift:\n  features:\n    amount:\n      psi_warn: 0.1\n      psi_drift: 0.08\n",
            "policy.yaml:4: drift.features.amount.psi_warn: psi_warn (0.1) must not exceed "
            "psi_drift (0.08)",
        ),
        (
            "drift:\n  psi_warn: 0.1\n  features:\n    amount: {psi_drift: 0.05}\n",
            "policy.yaml:4: drift.features.amount.psi_drift: psi_warn (0.1, the section's) "
            "must not exceed psi_drift (0.05)",
        ),
        (
            "models:\n  fraud:\n    drift:\n      features:\n        amount:\n"
            "          psi_drift: 0\n",
            "policy.yaml:6: models.fraud.drift.features.amount.psi_drift: Input should be "
            "greater than 0",
        ),
    ],
)
def test_bad_feature_setting_is_refused_with_line_path_and_reason(text: str, expected: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, source="policy.yaml")
    assert str(info.value).startswith(expected), str(info.value)


def test_every_bad_feature_is_named() -> None:
    text = """\
drift:
  features:
    amount: {psi_warn: 0.5}
    age: {psi_warn: 0.1}
    country: {psi_warn: 0.3, psi_drift: 0.4}
    channel: {psi_drift: 0.01}
models:
  fraud:
    drift:
      features:
        amount: {psi_drift: 0.01}
"""
    with pytest.raises(PolicyError) as info:
        parse_policy(text, source="policy.yaml")
    problems = str(info.value).split("; ")
    assert [re.sub(r": psi_warn .*", "", p) for p in problems] == [
        "policy.yaml:3: drift.features.amount.psi_warn",
        "policy.yaml:6: drift.features.channel.psi_drift",
        "policy.yaml:11: models.fraud.drift.features.amount.psi_drift",
    ]


def test_load_policy_and_policy_check_name_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    assert load_policy(str(path)) == parse_policy(GOOD)
    assert cli.main(["policy", "check", str(path)]) == 0
    path.write_text("drift:\n  features:\n    amount: {psi_warn: 0.1, psi_drift: nope}\n")
    with pytest.raises(
        PolicyError,
        match=rf"^{re.escape(str(path))}:3: "
        r"drift\.features\.amount\.psi_drift: ",
    ):
        load_policy(str(path))
    capsys.readouterr()
    assert cli.main(["policy", "check", str(path)]) == 2
    assert "drift.features.amount.psi_drift" in capsys.readouterr().err


def test_deploy_policy_and_its_commented_features_example_are_valid() -> None:
    text = (ROOT / "deploy" / "policy.yaml").read_text()
    assert parse_policy(text).drift.features == {}
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  # features:"))
    end = start + 1
    while end < len(lines) and lines[end].startswith("  #   "):
        end += 1
    assert end - start > 2
    uncommented = [line.replace("# ", "", 1) for line in lines[start:end]]
    example = "\n".join(lines[:start] + uncommented + lines[end:])
    drift = parse_policy(example, source="deploy/policy.yaml").drift
    assert drift.features, "the example names features"
    assert drift.ignored()
