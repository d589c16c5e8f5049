"""The worker's heap: what exists at start-up is frozen out of the collector, later garbage still goes."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from streamapp.runtime import heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class Node:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_settle_freezes_the_startup_objects_and_raises_the_young_threshold(restored_gc: None) -> None:
    before = Node()
    heap.settle()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == heap.YOUNG_THRESHOLD
    # a cycle that lived through the freeze stays, even once dropped
    frozen = weakref.ref(before)
    del before
    gc.collect()
    assert frozen() is not None


def test_cycles_made_after_settle_are_still_collected(restored_gc: None) -> None:
    heap.settle()
    later = Node()
    gone = weakref.ref(later)
    del later
    gc.collect()
    assert gone() is None


async def test_the_worker_settles_once_started(monkeypatch: pytest.MonkeyPatch) -> None:
    import faust

    from streamapp.app import StreamApp

    calls: list[str] = []

    async def started(self: object) -> None:
        calls.append("started")

    monkeypatch.setattr(faust.App, "on_started", started)
    monkeypatch.setattr(heap, "settle", lambda: calls.append("settled"))
    await StreamApp.on_started(object.__new__(StreamApp))
    assert calls == ["started", "settled"]


def test_a_frozen_cycle_is_collected_while_thawed_and_the_rest_frozen_again(restored_gc: None) -> None:
    # a RocksDB held by a cycle from before the freeze: faust's collection at a revocation frees it
    before = Node()
    held = weakref.ref(before)
    heap.settle()
    del before
    with heap.thawed():
        gc.collect()
    assert held() is None
    assert gc.get_freeze_count() > 0
