"""The worker's heap: objects that live as long as the worker are frozen out of the cyclic collector."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["YOUNG_THRESHOLD", "settle", "thawed"]

#: allocations between two collections of the youngest generation (CPython's default: 700). A
#: fetch of 2000 records allocates tens of thousands of short-lived objects (records, events,
#: envelopes): at 700 the collector ran dozens of times per batch, each young collection
#: promoting live batch objects that older collections then scan again.
YOUNG_THRESHOLD = 20_000


def settle() -> None:
    """Collect once, then freeze what survives and collect the young generation less often.

    A started worker holds hundreds of thousands of objects that never become garbage: faust's,
    aiokafka's and mode's services, the modules, the app's tables and agents. Without this every
    full collection walks them all again (0.4-0.7 s on a 2-core machine, the event loop stopped).
    ``gc.freeze`` moves them to the permanent generation, which no collection scans; objects
    created later are collected as before, cycles included. Safe to call more than once.
    """
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


@contextmanager
def thawed() -> Iterator[None]:
    """Within, the frozen objects are collectable again; frozen again after.

    For the collections that release files: faust drops a revoked partition's RocksDB and runs
    ``gc.collect()`` so that rocksdict lets go of the database's lock. A database opened before
    :func:`settle` and held by a reference cycle would otherwise stay open (and locked) for good.
    """
    frozen = gc.get_freeze_count() > 0
    if frozen:
        gc.unfreeze()
    try:
        yield
    finally:
        if frozen:
            gc.freeze()
