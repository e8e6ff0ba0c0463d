"""Events stamped too far ahead of their stream: kept out, and dead-lettered with the reason.

One rule for every agent that keeps event-time state (drift, KPI): an event
whose ``ts`` runs more than ``DRIFTLINE_MAX_FUTURE_S`` ahead of its stream's
time is not counted (``streams.windows.bound_future`` states the rule, the first
message of a stream and a stream that resumes after a pause included); its dead
letter names its time, the stream's time and the bound.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import orjson

from agents.inputs.codec import Origin, Row, dead_letter
from schemas.reports import DeadLetter
from streams.windows import FutureCheck, bound_future, future_reason

logger = logging.getLogger(__name__)

SETTING = "DRIFTLINE_MAX_FUTURE_S"


class FutureBound:
    """``bound_future`` for one agent, and the dead letters of what it refuses."""

    def __init__(self, *, max_future_ms: int, agent: str) -> None:
        if max_future_ms <= 0:
            raise ValueError(f"max_future_ms must be positive, got {max_future_ms}")
        self.max_future_ms = max_future_ms
        self.agent = agent

    def check(
        self, ts_ms: npt.NDArray[np.int64], *, stream_ms: int | None, ahead: list[int] | None
    ) -> FutureCheck:
        return bound_future(
            ts_ms, stream_ms=stream_ms, max_future_ms=self.max_future_ms, ahead=ahead
        )

    def letters(
        self,
        check: FutureCheck,
        ts_ms: npt.NDArray[np.int64],
        origin: Origin,
        raw: bytes | None,
        *,
        rows: Sequence[Row] | None = None,
        positions: Sequence[int | None] | None = None,
    ) -> list[DeadLetter]:
        """One dead letter per refused event: the event's JSON when ``rows`` are given
        (with its position in the message from ``positions``), else the message's bytes
        with the event's position (a batch decoded straight to columns)."""
        refused = np.flatnonzero(~check.keep).tolist()
        if not refused:
            return []
        out = []
        for i in refused:
            reason = future_reason(
                int(ts_ms[i]),
                reference_ms=check.reference_ms,
                max_future_ms=self.max_future_ms,
                setting=SETTING,
            )
            if rows is not None:
                encoded = orjson.dumps(rows[i])  # datetimes as RFC 3339 strings
                index = positions[i] if positions is not None else i
                out.append(
                    dead_letter(
                        origin,
                        reason,
                        encoded,
                        agent=self.agent,
                        index=index,
                        event=orjson.loads(encoded),
                    )
                )
            else:
                out.append(dead_letter(origin, reason, raw or b"", agent=self.agent, index=i))
        logger.warning(
            "%s: %d event(s) of %s[%d]@%d are more than %d s ahead of their "
            "stream's time; dead-lettered",
            self.agent,
            len(refused),
            origin.topic,
            origin.partition,
            origin.offset,
            self.max_future_ms // 1000,
        )
        return out
