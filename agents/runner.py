"""The loop every handler-based agent runs: handle off the event loop, then write.

A handler (``DriftHandler``, ``KpiHandler``) is Faust-free: ``handle(raw,
origin, table)`` returns an ``Outcome``. The agent runs it in a worker thread
against an ``Overlay`` of its table (a CPU-bound body on the event loop
starves Faust's fetcher: 12 ms of work per message cost 45 ms of wall time),
applies the table writes on the loop, where Faust tables must be written, and
sends the reports and dead letters. A handler that raises never stops the
worker: the message goes to ``deadletter`` with the exception, as a bug report.

Table writes are preceded by a redo record (agents.redo), so that a message
handed again after a crash is recognised and skipped: state is changed once
per message, and what a message emitted is never lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import faust
from pydantic import BaseModel

from agents import metrics
from agents.codec import Origin, dead_letter
from agents.config import Settings
from agents.overlay import Overlay
from agents.redo import RedoLog
from schemas.reports import DeadLetter

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    reports: list[BaseModel] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    counted: int = 0
    #: messages for the agent's other outputs: (output name, key, value)
    routed: list[tuple[str, bytes, bytes]] = field(default_factory=list)


class Handler(Protocol):
    AGENT: str

    def handle(
        self, raw: bytes | None, origin: Origin, table: MutableMapping[bytes, bytes]
    ) -> Outcome: ...


def handler_agent(
    handler: Handler, *, table: Any, reports: faust.types.TopicT, deadletter: faust.types.TopicT,
    outputs: dict[str, faust.types.TopicT] | None = None, log: RedoLog | None = None,
) -> Any:
    """An agent body (``async def (stream)``) that runs ``handler`` on every message.

    ``log`` holds the table's redo records (agents.redo); None without a table."""

    async def agent(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            origin = Origin(msg.topic, msg.partition, msg.offset, msg.key)
            redo = None if log is None else log.begin(msg.partition, msg.topic, msg.offset)
            if log is not None and redo is None:
                metrics.REDELIVERED.labels(origin.topic, handler.AGENT).inc()
                logger.info("%s: %s[%d]@%d was applied before the worker stopped; skipped",
                            handler.AGENT, origin.topic, origin.partition, origin.offset)
                continue
            view = Overlay(table if table is not None else {})
            try:
                outcome = await asyncio.to_thread(handler.handle, msg.value, origin, view)
            except Exception as exc:  # keep the worker alive; keep the message
                logger.exception("%s agent failed on %s[%d]@%d", handler.AGENT,
                                 origin.topic, origin.partition, origin.offset)
                letter = dead_letter(
                    origin,
                    f"driftline failed while processing this message ({type(exc).__name__}: "
                    f"{exc}); this is a driftline bug, please report it with this dead letter",
                    msg.value or b"", agent=handler.AGENT,
                )
                await deadletter.send(key=msg.key, value=letter.model_dump_json().encode())
                metrics.observe(handler.AGENT, origin.topic, counted=0, dead=1, reports=())
                continue
            metrics.observe(handler.AGENT, origin.topic, counted=outcome.counted,
                            dead=len(outcome.dead), reports=outcome.reports)
            sent = []
            for report in outcome.reports:
                model = getattr(report, "model", "")
                sent.append(await reports.send(key=model.encode(),
                                               value=report.model_dump_json().encode()))
            for name, key, value in outcome.routed:
                sent.append(await (outputs or {})[name].send(key=key, value=value))
            for letter in outcome.dead:
                sent.append(await deadletter.send(key=msg.key,
                                                  value=letter.model_dump_json().encode()))
            changes = view.changes()
            if log is not None and redo is not None and changes:
                # What the message emitted is acknowledged before the state that says
                # it was handled (agents.redo): a crash in between sends it again.
                if sent:
                    await asyncio.gather(*sent)
                log.commit(msg.partition, redo, msg.topic, msg.offset, changes)

    return agent


def register(
    app: faust.App, settings: Settings, handler: Handler, *, name: str, sources: list[str],
    output: str, table: str | None, extra_outputs: tuple[str, ...] = (),
) -> tuple[faust.types.AgentT, Any]:
    """The agent ``name``: ``handler`` over the ``sources`` topics (in one stream, so
    a model's messages are handled in order), reports to ``output``, its state in
    the Faust table ``table`` (bytes keys and values, one changelog partition per
    input partition), or none (``table=None``: the controller keeps its state in
    the registry). Returns the agent and its table."""
    state = None if table is None else app.Table(
        table, default=None, key_type=bytes, value_type=bytes, partitions=settings.partitions)
    log = None if state is None else RedoLog(state)
    if log is not None:

        @app.on_partitions_revoked.connect
        async def recheck(sender: object, revoked: object, **kwargs: object) -> None:
            log.forget()  # the table is recovered again for the partitions assigned next

    body = handler_agent(
        handler,
        table=state,
        log=log,
        reports=app.topic(settings.topic(output), key_type=bytes, value_type=bytes),
        deadletter=app.topic(settings.topic("deadletter"), key_type=bytes, value_type=bytes),
        outputs={name: app.topic(settings.topic(name), key_type=bytes, value_type=bytes)
                 for name in extra_outputs},
    )
    source = app.topic(*(settings.topic(s) for s in sources), key_type=bytes, value_type=bytes)
    return app.agent(source, name=name)(body), state
