"""The worker's offset commit interval (DRIFTLINE_COMMIT_INTERVAL_S) reaches Faust,
and a bad value is refused at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.app import create_app
from agents.config import Settings
from schemas.errors import DriftlineError
from schemas.policy import Policy


def test_the_interval_reaches_faust(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().commit_interval_s == 1.0
    monkeypatch.setenv("DRIFTLINE_COMMIT_INTERVAL_S", "2.5")
    s = Settings.from_env(topic_prefix="p.", app_id="a", datadir=str(tmp_path),
                          registry=str(tmp_path / "registry"))
    app = create_app(s, policy=Policy(), agents=["drift"])
    assert app.conf.broker_commit_interval == 2.5


def test_a_bad_interval_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_COMMIT_INTERVAL_S", "0")
    with pytest.raises(DriftlineError, match="DRIFTLINE_COMMIT_INTERVAL_S must be above 0"):
        Settings.from_env()
