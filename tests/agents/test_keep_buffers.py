"""agents.app.keep_buffers: freed megabyte buffers are kept for the next message, not
returned to the system and faulted in again (what each 5,000-event message paid)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from agents.app import keep_buffers
    assert keep_buffers()
def message():  # the columns of one message, each 1 MB, freed after it
    columns = [np.ones(1 << 17) for _ in range(20)]
    return sum(c.sum() for c in columns)
message()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    message()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


def test_freed_megabyte_buffers_are_reused_without_page_faults() -> None:
    default, kept = faults("default"), faults("keep")
    assert default > 20 * 20 * 100, default  # each 1 MB buffer faulted in again (256 pages)
    assert kept < 2_000, kept
