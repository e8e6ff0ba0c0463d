"""``streams/`` and ``schemas/`` stay free of Kafka, Faust, the agents and the clock."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("faust", "aiokafka", "confluent_kafka", "mode", "agents")

# Imports every module of the packages, then prints what got loaded.
_PROBE = """
import importlib, json, pkgutil, sys
imported = []
for name in {packages!r}:
    package = importlib.import_module(name)
    imported.append(name)
    for info in pkgutil.walk_packages(getattr(package, "__path__", []), prefix=name + "."):
        importlib.import_module(info.name)
        imported.append(info.name)
print(json.dumps({{"imported": imported, "loaded": sorted(sys.modules)}}))
"""


def _probe(packages: tuple[str, ...]) -> dict[str, list[str]]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(packages=packages)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _on_disk(package: str) -> set[str]:
    names = set()
    for path in (ROOT / package).rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.mark.parametrize("packages", [("schemas",), ("streams",)])
def test_pure_packages_load_no_kafka_faust_or_agents(packages: tuple[str, ...]) -> None:
    seen = _probe(packages)
    assert set(seen["imported"]) == set().union(*(_on_disk(p) for p in packages))
    leaked = sorted(
        m for m in seen["loaded"] if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)
    )
    assert leaked == []


def test_probe_detects_a_forbidden_import() -> None:
    seen = _probe(("agents.inputs.codec",))
    assert "agents" in seen["loaded"]


_CLOCK = re.compile(r"\btime\.time\(|\bdatetime\.now\(|\btime\.monotonic\(|\butcnow\(")


def test_streams_reads_no_clock() -> None:
    sources = sorted((ROOT / "streams").rglob("*.py"))
    assert len(sources) >= 8
    hits = [
        f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}"
        for path in sources
        for lineno, line in enumerate(path.read_text().splitlines(), start=1)
        if _CLOCK.search(line)
    ]
    assert hits == []


def test_clock_pattern_matches_what_it_should() -> None:
    for line in ["t = time.time()", "now = datetime.now(tz=UTC)", "x = time.monotonic()"]:
        assert _CLOCK.search(line)
    assert not _CLOCK.search("datetime.fromtimestamp(ms / 1000, tz=UTC)")
