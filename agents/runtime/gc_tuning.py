"""The garbage collector, set for a worker that allocates per event.

CPython collects its youngest generation every 700 net allocations of container
objects (lists, dicts, ...) and, every tenth time, the next one, walking every
object that survived so far. Decoding a 500-event JSON batch allocates tens of
thousands of containers, almost all freed by reference counting moments later:
the collector runs about 1,000 times per 200,000 events and finds next to
nothing to free. Measured in the bench's drift worker (``gc.callbacks``, 200,000
JSON events, two runs each): 0.33-0.41 s of its 4.6 s of CPU with Python's
settings, 0.19-0.20 s with these.

So once the worker is ready (its modules imported, its tables recovered),
:func:`tune` moves every object alive then into the permanent generation
(``gc.freeze``: never walked again) and raises the youngest generation's
threshold to ``gen0`` (DRIFTLINE_GC_GEN0, 50,000 by default; 0 leaves Python's
settings). What it costs: garbage in reference cycles waits for up to ``gen0``
net container allocations before it is freed, at most a few tens of MB at
50,000 (a container is 50-600 bytes); memory that reference counting frees, most
of it, is freed at once as before.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger(__name__)

#: the youngest generation's threshold once the worker is ready (Python's: 700)
DEFAULT_GEN0 = 50_000


def tune(gen0: int) -> None:
    """Freeze what is alive now and collect the youngest generation every ``gen0``
    net container allocations; ``gen0`` 0: Python's own settings, untouched."""
    if gen0 <= 0:
        return
    gc.collect()  # what is garbage now is not frozen with the rest
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)
    logger.info(
        "garbage collector: %d objects frozen, thresholds %s",
        gc.get_freeze_count(),
        gc.get_threshold(),
    )
