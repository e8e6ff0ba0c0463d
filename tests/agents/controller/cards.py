"""A complete model card for tests that register versions (owner and risk tier are required)."""

from __future__ import annotations

from typing import Any

CARD: dict[str, Any] = {"owner": "risk-ml", "risk_tier": "minimal"}
