"""How long Arrow's allocator keeps freed memory before handing it back to the operating system.

pyarrow allocates through the mimalloc it bundles, which by default returns ("purges") freed pages to
the system about 10 ms after they are freed. A stage reads, converts and writes its partition in
batches of a few tens of MB each, some 30-100 ms apart, so every batch's buffers were fresh pages that
the kernel had to fault in and zero again (transparent huge pages: 2 MB each). On the 105 MB real
corpus, two full-size stages run with their invariant checks took 0.76-1.03 system CPU s by default
and 0.23-0.29 with a 5 s purge delay (user time the same; peak RSS +40 MB, the batches' buffers kept
for reuse): benchmarks/RESULTS.md, "Arrow's freed pages kept for the next batch".

mimalloc reads the setting from the environment once, when pyarrow's library loads, so it is set
before that (``refinery``'s ``__init__`` calls :func:`hold_freed_arrow_pages` before any of our
modules imports pyarrow). Nothing computed changes: only when freed pages go back to the system.
"""

from __future__ import annotations

import os
import sys

PURGE_DELAY_VARIABLE = "MIMALLOC_PURGE_DELAY"
# Long enough to span the gap between two batches (and a stage's read, write and checks), short
# enough that a long-lived process (a code server) still returns what a finished run freed.
PURGE_DELAY_MS = 5_000


def hold_freed_arrow_pages() -> bool:
    """Set mimalloc's purge delay to :data:`PURGE_DELAY_MS` if pyarrow is not loaded yet and nobody
    chose one (an explicit ``MIMALLOC_PURGE_DELAY`` wins); True when the setting will take effect."""
    if "pyarrow" in sys.modules or PURGE_DELAY_VARIABLE in os.environ:
        return False
    os.environ[PURGE_DELAY_VARIABLE] = str(PURGE_DELAY_MS)
    return True
