"""The runner's send path: an output that cannot be sent never stops the agent.

The topics here stand in for Faust's: ``send`` raises as Faust's does when aiokafka
refuses a message before it leaves (ProducerSendError from MessageSizeTooLargeError),
or gives a future that fails as aiokafka's do when the broker refuses it. The
worker against the real broker: tests/e2e/test_poison_pills.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import MutableMapping
from typing import Any

import orjson
import pytest
from aiokafka.errors import MessageSizeTooLargeError, RequestTimedOutError
from faust.exceptions import ProducerSendError
from pydantic import BaseModel

from agents import metrics
from agents.inputs.codec import Origin, dead_letter
from agents.runtime.redo import RedoLog
from agents.runtime.runner import Outcome, handler_agent
from tests.agents.runtime.test_runner import Message, Stream

TOPIC = "predictions"


class Report(BaseModel):
    model: str
    n: int


class Emitter:
    """Emits one report and one dead letter per message; remembers the offsets."""

    AGENT = "test"

    def __init__(self) -> None:
        self.seen: list[int] = []

    def handle(
        self, raw: bytes | None, origin: Origin, table: MutableMapping[bytes, bytes]
    ) -> Outcome:
        self.seen.append(origin.offset)
        table[b"n"] = orjson.dumps(len(self.seen))
        letter = dead_letter(origin, "bad", raw or b"", agent=self.AGENT)
        return Outcome(reports=[Report(model="m", n=len(self.seen))], dead=[letter], counted=1)


class Topic:
    """A Faust topic's ``send``: ``refuse`` decides, per try, what goes wrong (None: sent)."""

    def __init__(self, name: str, refuse: Any = None) -> None:
        self.name, self.refuse = name, refuse or (lambda _n: None)
        self.tries = 0
        self.sent: list[bytes] = []

    def get_topic_name(self) -> str:
        return self.name

    async def send(self, *, key: bytes | None, value: bytes) -> asyncio.Future[None]:
        self.tries += 1
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        error = self.refuse(self.tries)
        if isinstance(error, ProducerSendError):
            raise error  # refused before it left, as aiokafka's size check does
        if isinstance(error, asyncio.CancelledError):
            done.cancel()  # the producer is stopping
        elif error is not None:
            done.set_exception(error)  # refused by the broker
        else:
            self.sent.append(value)
            done.set_result(None)
        return done


def too_large(_try: int) -> BaseException:
    size = MessageSizeTooLargeError("The message is 23648239 bytes when serialized")
    error = ProducerSendError(f"Error while sending: {size!r}")
    error.__cause__ = size
    return error


def failures(topic: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "driftline_send_failures_total", {"topic": topic, "agent": "test"}
    )
    return value or 0.0


def run(reports: Topic, deadletter: Topic, messages: int = 3) -> tuple[Emitter, RedoLog]:
    handler, table = Emitter(), {}
    log = RedoLog(table)
    runner = handler_agent(
        handler,
        table=table,
        reports=reports,
        deadletter=deadletter,  # type: ignore[arg-type]
        log=log,
        send_backoff_s=0.001,
    )
    stream = Stream([Message(TOPIC, 0, o, b"m", b"x" * (o + 1)) for o in range(messages)])
    asyncio.run(runner.body(stream))
    return handler, log


def recorded(log: RedoLog, offset: int) -> bool:
    return log.begin(0, TOPIC, offset) is None  # None: applied already


def test_a_dead_letter_too_large_to_send_is_counted_and_the_partition_goes_on() -> None:
    before = failures("dl-large")
    reports, deadletter = Topic("r-ok"), Topic("dl-large", too_large)
    handler, log = run(reports, deadletter)
    assert handler.seen == [0, 1, 2], "every message handled"
    assert all(recorded(log, o) for o in range(3)), "and recorded: the offsets move on"
    assert len(reports.sent) == 3, "the reports went out"
    assert deadletter.tries == 3, "a permanent refusal is not tried again"
    assert failures("dl-large") - before == 3


def test_a_report_that_cannot_be_sent_is_named_in_a_dead_letter() -> None:
    before = failures("r-large")
    reports, deadletter = Topic("r-large", too_large), Topic("dl-ok")
    handler, log = run(reports, deadletter, messages=1)
    assert handler.seen == [0] and recorded(log, 0)
    assert failures("r-large") - before == 1
    own, note = (orjson.loads(v) for v in deadletter.sent)
    assert own["error"] == "bad"
    assert "could not send the Report of model 'm'" in note["error"]
    assert "'r-large'" in note["error"] and "MessageSizeTooLargeError" in note["error"]
    assert (note["topic"], note["partition"], note["offset"]) == (TOPIC, 0, 0)
    assert base64.b64decode(note["raw"]) == b"x", "it holds the input message"
    assert note["raw_sha256"] == hashlib.sha256(b"x").hexdigest()


def test_transient_refusals_are_retried_with_backoff() -> None:
    before = failures("r-flaky")
    # The broker times out the first two tries of the first report, then takes it.
    reports = Topic("r-flaky", lambda n: RequestTimedOutError() if n <= 2 else None)
    deadletter = Topic("dl-ok")
    _, log = run(reports, deadletter, messages=2)
    assert recorded(log, 0) and recorded(log, 1)
    assert [orjson.loads(v)["n"] for v in reports.sent] == [1, 2], "each sent once it went"
    assert reports.tries == 4
    assert failures("r-flaky") == before
    assert [orjson.loads(v)["error"] for v in deadletter.sent] == ["bad", "bad"]


def test_retries_are_bounded_then_the_output_counts_as_lost() -> None:
    before = failures("r-down")
    reports, deadletter = Topic("r-down", lambda _n: RequestTimedOutError()), Topic("dl-ok")
    _, log = run(reports, deadletter, messages=1)
    assert recorded(log, 0), "the message is recorded after the last try"
    assert reports.tries == 5  # SEND_ATTEMPTS
    assert failures("r-down") - before == 1
    assert "RequestTimedOutError" in orjson.loads(deadletter.sent[-1])["error"]


def test_a_stopping_worker_does_not_record_the_message() -> None:
    reports = Topic("r-stop", lambda _n: asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        run(reports, Topic("dl-ok"), messages=1)


class Lingering(Topic):
    """A producer that lingers until it is pushed: a send's future stays pending until
    ``push()``, which sends everything queued so far."""

    def __init__(self, name: str, pending: list[asyncio.Future[None]]) -> None:
        super().__init__(name)
        self.pending = pending

    async def send(self, *, key: bytes | None, value: bytes) -> asyncio.Future[None]:
        self.tries += 1
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append(done)
        self.sent.append(value)
        return done


def test_the_producer_is_pushed_once_a_batch_s_outputs_are_queued() -> None:
    # The agent waits for its outputs' acknowledgements before its next batch; a
    # producer lingering then would hold the agent for its whole linger.
    pending: list[asyncio.Future[None]] = []
    pushes: list[int] = []  # how many outputs were queued at each push

    def push() -> None:
        pushes.append(len(pending))
        for done in pending:
            if not done.done():
                done.set_result(None)

    handler, table = Emitter(), {}
    log = RedoLog(table)
    runner = handler_agent(handler, table=table, reports=Lingering("r", pending),  # type: ignore[arg-type]
                           deadletter=Lingering("dl", pending), log=log,  # type: ignore[arg-type]
                           push=push)
    stream = Stream([Message(TOPIC, 0, o, b"m", b"x") for o in range(4)], sizes=[3, 1])

    async def main() -> None:
        await asyncio.wait_for(runner.body(stream), timeout=30)  # no push: never done

    asyncio.run(main())
    assert handler.seen == [0, 1, 2, 3]
    # one push per batch, after all of its outputs (a report and a dead letter a message)
    assert pushes == [6, 8]
    assert all(recorded(log, o) for o in range(4))
