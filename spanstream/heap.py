"""The garbage collector of a long-running worker.

CPython's cyclic collector walks every tracked container of the generations
it collects, and a full collection walks the whole heap. Two things make
that expensive in a worker, and `settle` undoes both once start-up is over:

* the heap is mostly what start-up built (modules, botocore's service
  models, the clients: about 90,000 containers) and none of it will ever be
  garbage, yet every full collection walks it again. ``gc.freeze()`` moves
  it to a permanent generation the collector no longer visits;
* the pipeline allocates containers for every span, and CPython runs a young
  collection every 700 of them (its default), which promotes what a flush
  interval buffers to older generations and so brings full collections
  about. `YOUNG_THRESHOLD` allocations between young collections make them,
  and the full collections they cause, rarer.

Measured on the reference workload's full path (100,000 spans), time spent
in the collector: 305 ms with CPython's defaults and the benchmark's own
objects on the heap, 110 ms with start-up frozen, 25 ms with the young
threshold raised as well. Collection still happens: objects made later are
freed by reference counting as always, and reference cycles among them at
the next collection, so memory that cycles hold is bounded by the young
threshold's worth of containers, a few megabytes.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

#: Container allocations (net of frees) between two young collections; the
#: older generations' thresholds stay CPython's.
YOUNG_THRESHOLD = 50_000


def settle(what: str) -> int:
    """Freeze the heap built so far out of collections; collect young rarely.

    The shells call this once their start-up (settings, clients, sinks) is
    done; ``what`` names it in the log. Calling it again freezes what was
    built since. Returns how many objects are frozen in all.
    """
    gc.collect()
    gc.freeze()
    tune_thresholds()
    frozen = gc.get_freeze_count()
    logger.debug("%s: %d objects frozen out of garbage collection", what, frozen)
    return frozen


def tune_thresholds() -> None:
    """Set the young generation's threshold to `YOUNG_THRESHOLD`."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


@contextmanager
def tuned_thresholds() -> Iterator[None]:
    """Run the block with `tune_thresholds`, then restore the thresholds
    (for a process that measures code with and without a worker's tuning)."""
    before = gc.get_threshold()
    tune_thresholds()
    try:
        yield
    finally:
        gc.set_threshold(*before)
