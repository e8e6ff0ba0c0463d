"""The worker's floor, for ``driftline bench``: the drift agent's worker with a
handler that reads nothing of its messages.

Whatever the handler does, a worker spends CPU on every message: Faust's
consumer thread fetching and unpacking it, the stream handing it to the agent,
the runner's redo record, the table write and its changelog record
(``agents.runtime.runner``). The bench runs this worker on the same messages as the
drift agent, so that one run shows that cost apart from the drift handler's:
no worker of this design is faster than its floor.

``FloorHandler`` writes one table value per message of the size the drift
agent writes for the bench's traffic (its window state), and sends a mark
every ``every`` messages, from whose Kafka timestamps the bench reads the rate
as it does from the drift reports.

    python -m agents.dev.bench_floor --broker HOST:PORT --topic-prefix P --app-id A \\
        --every 40 --value-bytes 12000
"""

from __future__ import annotations

import argparse
from collections.abc import MutableMapping

from pydantic import BaseModel

from agents.app import Worker, create_app
from agents.config import Settings
from agents.inputs.codec import Origin
from agents.runtime import runner
from agents.runtime.runner import Outcome
from schemas.policy import Policy

#: the model under which the marks are sent (their message key)
MODEL = "floor"


class FloorMark(BaseModel):
    """Sent after every ``every`` messages: how many messages were handled."""

    model: str = MODEL
    messages: int


class FloorHandler:
    """Counts messages into one table key; reads nothing of them."""

    AGENT = "floor"

    def __init__(self, *, every: int, value_bytes: int) -> None:
        self.every = every
        self.padding = b"\x00" * value_bytes

    def handle(
        self, raw: bytes | None, origin: Origin, table: MutableMapping[bytes, bytes]
    ) -> Outcome:
        key = b"floor@" + (origin.key or b"")
        stored = table.get(key)
        n = 1 + (int(stored[: stored.index(b"|")]) if stored else 0)
        table[key] = b"%d|" % n + self.padding
        out = Outcome(counted=1)
        if n % self.every == 0:
            out.reports.append(FloorMark(messages=n))
        return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agents.dev.bench_floor", description=__doc__)
    p.add_argument("--broker", required=True)
    p.add_argument("--topic-prefix", required=True)
    p.add_argument("--app-id", required=True)
    p.add_argument("--every", type=int, required=True)
    p.add_argument("--value-bytes", type=int, required=True)
    args = p.parse_args(argv)
    # From the environment as the worker's (DRIFTLINE_FETCH, ...), so that both measure
    # the same setup.
    settings = Settings.from_env(broker=args.broker, topic_prefix=args.topic_prefix,
                                 app_id=args.app_id, log_level="warn")
    app = create_app(settings, policy=Policy(), agents=())
    runner.register(app, settings, FloorHandler(every=args.every, value_bytes=args.value_bytes),
                    name="floor", sources=["predictions"], output="drift", table="floor-state")
    Worker(app, loglevel=settings.log_level, quiet=True).execute_from_commandline()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
