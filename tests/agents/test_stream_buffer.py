"""The bound on messages waiting in an agent's stream (DRIFTLINE_STREAM_BUFFER_MESSAGES)
reaches Faust, is never below two batches, and a bad value is refused at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.app import create_app
from agents.config import Settings
from schemas.errors import DriftlineError
from schemas.policy import Policy


def _app_buffer(tmp_path: Path, **settings: int) -> int:
    s = Settings(topic_prefix="p.", app_id="a", datadir=str(tmp_path),
                 registry=str(tmp_path / "registry"), **settings)  # type: ignore[arg-type]
    size: int = create_app(s, policy=Policy(), agents=["drift"]).conf.stream_buffer_maxsize
    return size


def test_the_default_bound_replaces_faust_s_4096(tmp_path: Path) -> None:
    assert Settings().stream_buffer_messages == 1024
    assert _app_buffer(tmp_path) == 1024


def test_the_bound_holds_two_batches_at_least(tmp_path: Path) -> None:
    assert _app_buffer(tmp_path, stream_buffer_messages=16, batch_max_messages=64) == 128
    assert _app_buffer(tmp_path, stream_buffer_messages=300) == 300


def test_the_environment_sets_it_and_a_bad_value_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DRIFTLINE_STREAM_BUFFER_MESSAGES", "512")
    assert Settings.from_env().stream_buffer_messages == 512
    monkeypatch.setenv("DRIFTLINE_STREAM_BUFFER_MESSAGES", "0")
    with pytest.raises(DriftlineError, match="DRIFTLINE_STREAM_BUFFER_MESSAGES must be 1 or more"):
        Settings.from_env()
