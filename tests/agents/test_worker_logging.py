"""The worker keeps the log level asked for (agents.app.Worker)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import faust
import pytest

from agents.app import Worker


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    streams = sys.stdout, sys.stderr, sys.displayhook  # Faust's worker replaces them
    yield root
    sys.stdout, sys.stderr, sys.displayhook = streams
    root.handlers[:] = handlers  # Faust's worker removes some and adds its spinner's
    root.setLevel(level)


@pytest.mark.parametrize(("asked", "level"), [("warn", logging.WARNING), ("info", logging.INFO)])
def test_debug_lines_are_not_built_below_the_level_asked_for(
    root_logger: logging.Logger, asked: str, level: int
) -> None:
    app = faust.App("driftline-test-logging", broker="kafka://localhost:1", web_enabled=False)
    Worker(app, loglevel=asked, quiet=True)._setup_logging()
    assert root_logger.level == level
    assert not logging.getLogger("aiokafka.conn").isEnabledFor(logging.DEBUG)


def test_faust_s_own_worker_would_build_them(root_logger: logging.Logger) -> None:
    """What the subclass is for: Faust's spinner sets the root logger to DEBUG."""
    app = faust.App("driftline-test-logging2", broker="kafka://localhost:1", web_enabled=False)
    faust.Worker(app, loglevel="warn", quiet=True)._setup_logging()
    assert logging.getLogger("aiokafka.conn").isEnabledFor(logging.DEBUG)
