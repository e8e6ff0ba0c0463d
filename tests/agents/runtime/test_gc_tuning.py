"""The worker's garbage-collector settings (agents.runtime.gc_tuning)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from agents.config import Settings
from agents.runtime import gc_tuning
from schemas.errors import DriftlineError


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_tune_freezes_what_is_alive_and_raises_the_youngest_threshold(restore_gc: None) -> None:
    gc.unfreeze()
    _, gen1, gen2 = gc.get_threshold()
    gc_tuning.tune(50_000)
    assert gc.get_threshold() == (50_000, gen1, gen2)
    assert gc.get_freeze_count() > 0


def test_gen0_zero_leaves_pythons_settings(restore_gc: None) -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    gc_tuning.tune(0)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_a_negative_threshold_is_refused_naming_the_setting() -> None:
    with pytest.raises(DriftlineError, match="DRIFTLINE_GC_GEN0 must be 0"):
        Settings(gc_gen0=-1)
