"""Lint and strict typing are part of the suite, not an optional extra."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_mypy_strict_on_schemas_and_streams() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "schemas", "streams"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_lint() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "schemas", "streams", "agents", "scripts", "tests"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
