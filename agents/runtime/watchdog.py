"""Exit the worker a grace period after a shutdown signal, whatever Kafka does.

With the broker gone, Faust's orderly stop waits on the broker: the consumer
thread's stop times out after a minute, a commit or a producer flush retries;
SIGTERM and SIGINT look ignored. Once the first one has arrived, a timer thread
gives the stop ``grace_s`` seconds (default 25, below Kubernetes' 30-s
termination grace) and then ends the process with exit code 70, logging what
had not stopped. Nothing is lost by that: it is a crash, and the worker is built
for crashes: input offsets not committed are delivered again at the next start,
and a message whose table writes were cut short is completed from its redo
record (docs/guarantees.md).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

#: seconds from the first SIGTERM/SIGINT to a forced exit (DRIFTLINE_SHUTDOWN_GRACE_S)
DEFAULT_GRACE_S = 25.0
#: the exit code of a forced exit (EX_SOFTWARE: the stop did not finish)
FORCED_EXIT_CODE = 70


class ShutdownWatchdog:
    """``arm(reason)`` once; ``grace_s`` later, ``pending()`` is logged and the process ends.

    ``pending`` names what has not stopped yet; ``exit`` is ``os._exit`` (no
    cleanup: the cleanup is what hangs), replaceable in tests.
    """

    def __init__(
        self,
        *,
        grace_s: float = DEFAULT_GRACE_S,
        broker: str = "",
        pending: Callable[[], list[str]] = list,
        exit: Callable[[int], object] = os._exit,
    ) -> None:
        if grace_s <= 0:
            raise ValueError(f"grace_s must be above 0, got {grace_s}")
        self.grace_s = grace_s
        self.broker = broker
        self.pending = pending
        self._exit = exit
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    @property
    def armed(self) -> bool:
        return self._timer is not None

    def arm(self, reason: str) -> None:
        with self._lock:
            if self._timer is not None:
                return
            self._timer = threading.Timer(self.grace_s, self._expire, args=(reason,))
            self._timer.daemon = True
            self._timer.name = "shutdown-watchdog"
            self._timer.start()

    def _expire(self, reason: str) -> None:
        try:
            pending = ", ".join(self.pending()) or "the event loop's last tasks"
        except Exception as exc:  # naming them must not stop the exit
            pending = f"(could not list: {exc})"
        logger.error(
            "the worker did not stop within %g s of %s (is the broker at %s reachable?); "
            "exiting now, abandoning: %s. Nothing is lost: offsets not committed are read "
            "again at the next start and redo records complete a message cut short",
            self.grace_s,
            reason,
            self.broker or "?",
            pending,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        self._exit(FORCED_EXIT_CODE)
