"""The partition plan's table of agent inputs matches what the app registers; topic roles."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.app import AGENTS, create_app
from agents.config import Settings
from agents.runtime.partitions import AGENT_INPUTS, PartitionError, changelog, check, missing_counts
from agents.topics import CATALOGUE, config_problems
from schemas.policy import Policy


def test_agent_inputs_are_what_each_agent_reads_and_its_table(tmp_path: Path) -> None:
    settings = Settings(
        topic_prefix="p.", app_id="a", datadir=str(tmp_path), registry=str(tmp_path / "registry")
    )
    app = create_app(settings, policy=Policy(), partitions=dict.fromkeys(AGENTS, 4))
    assert set(AGENT_INPUTS) == set(AGENTS)
    for name, (sources, table) in AGENT_INPUTS.items():
        agent = next(a for a in app.agents.values() if a.name.endswith(name))
        assert set(agent.channel.topics) == {settings.topic(s) for s in sources}, name
        assert app.tables[table].partitions == 4, "the plan's count reaches the table"
        assert app.tables[table].changelog_topic.get_topic_name() == changelog(settings, table)


def test_tables_follow_their_own_inputs() -> None:
    s = Settings(partitions=1)
    found = {
        "predictions": 6,
        "features": 6,
        "references": 6,
        "labels": 6,
        "commands": 1,
        "training-data": 6,
    }
    assert check(s, ["drift", "kpi", "poisoning", "controller"], found) == {
        "drift": 6,
        "kpi": 6,
        "poisoning": 6,
        "controller": 1,
    }


def test_existing_changelog_with_another_count_is_refused() -> None:
    s = Settings(partitions=1, app_id="x")
    with pytest.raises(PartitionError, match=r"x-controller-progress-changelog has 2 "):
        check(s, ["controller"], {"commands": 1, "x-controller-progress-changelog": 2})


@pytest.mark.parametrize(
    "found, expected",
    [
        ({}, {"features": 1, "commands": 1}),
        ({"training-data": 4}, {"features": 4, "commands": 1}),  # joined through references
        ({"predictions": 4, "labels": 2}, {"features": 1, "commands": 1}),  # no one count to follow
    ],
)
def test_created_topics_follow_the_topics_they_are_read_with(
    found: dict[str, int], expected: dict[str, int]
) -> None:
    assert missing_counts(Settings(partitions=1), found, ["features", "commands"]) == expected


def test_topic_roles_carry_their_configuration() -> None:
    configs = {spec.name: spec.config() for spec in CATALOGUE}
    for name in ("deployments", "commands"):
        assert configs[name]["retention.ms"] == "-1"
        assert configs[name]["retention.bytes"] == "-1"
        assert configs[name]["cleanup.policy"] == "delete"
    assert configs["references"] == {"cleanup.policy": "compact"}
    assert configs["predictions"] == {}
    # topics whose records are as large as the worker takes say so to the broker
    # (Apache Kafka refuses records over 1 MB by default)
    sized = {spec.name: spec.config(16 << 20) for spec in CATALOGUE}
    limit = str((16 << 20) + 65_536)
    for name in ("predictions", "features", "labels", "training-data", "references"):
        assert sized[name]["max.message.bytes"] == limit, name
    assert sized["references"]["cleanup.policy"] == "compact"
    assert "max.message.bytes" not in sized["drift"] and "max.message.bytes" not in sized[
        "deployments"]


@pytest.mark.parametrize(
    "name, found, said",
    [
        ("deployments", {"retention.ms": "604800000"}, "deletes records older than 7 days"),
        ("commands", {"retention.bytes": "1073741824"}, "beyond 1073741824 bytes"),
        ("deployments", {"cleanup.policy": "compact"}, "is compacted"),
        ("references", {"cleanup.policy": "delete"}, "is not compacted"),
    ],
)
def test_config_problems_name_topic_setting_and_fix(
    name: str, found: dict[str, str], said: str
) -> None:
    spec = next(s for s in CATALOGUE if s.name == name)
    (problem,) = config_problems(spec, f"p.{name}", found, "kafka:9092")
    assert problem.startswith(f"topic p.{name} ") and said in problem
    assert (
        "kafka-configs.sh --bootstrap-server kafka:9092 --alter --entity-type topics "
        f"--entity-name p.{name} --add-config"
    ) in problem


def test_settings_that_keep_records_are_not_problems() -> None:
    spec = next(s for s in CATALOGUE if s.name == "deployments")
    kept = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}
    assert config_problems(spec, "deployments", kept, "k:9092") == []
    assert config_problems(spec, "deployments", {}, "k:9092") == []  # not reported: not judged
