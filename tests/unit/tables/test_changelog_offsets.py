"""The changelog offset a worker keeps after its writes: what a recovery reads the changelog from."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from streamapp.runtime.producer import Delivery
from tables.base import remember_changelog_offsets

CHANGELOG = "app-detection-state-changelog"


class Store:
    """A table's store as faust's RocksDB store keeps the persisted offset per partition."""

    def __init__(self) -> None:
        self.offsets: dict[TP, int] = {}

    def persisted_offset(self, tp: TP) -> int | None:
        return self.offsets.get(tp)

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        self.offsets[tp] = offset


async def _delivered(table: Any, first: int, records: int, partition: int = 0) -> None:
    future = asyncio.get_running_loop().create_future()
    remember_changelog_offsets(table, [Delivery(TP(CHANGELOG, partition), records, future)])
    future.set_result(SimpleNamespace(offset=first))
    await asyncio.sleep(0)  # the done callbacks run


async def test_an_offset_is_kept_only_while_this_worker_wrote_every_record_before_it() -> None:
    store = Store()
    table = SimpleNamespace(
        changelog_topic=SimpleNamespace(get_topic_name=lambda: CHANGELOG),
        data=store,
        app=SimpleNamespace(in_transaction=False),
    )
    tp = TP(CHANGELOG, 0)
    await _delivered(table, first=0, records=10)
    assert store.offsets[tp] == 9
    await _delivered(table, first=10, records=5)
    assert store.offsets[tp] == 14
    # paused past its session with a batch in flight: another worker wrote 15-40 meanwhile, then
    # the batch landed at 41. The local state lacks 15-40: the next recovery must read from 15
    await _delivered(table, first=41, records=3)
    assert store.offsets[tp] == 14
    await _delivered(table, first=44, records=1)
    assert store.offsets[tp] == 14
    # recovery read the changelog up to its end (streamapp.runtime.consumer.changelog_restore)
    store.set_persisted_offset(tp, 60)
    await _delivered(table, first=61, records=2)
    assert store.offsets[tp] == 62
    # other partitions are their own
    await _delivered(table, first=100, records=1, partition=1)
    assert store.offsets[TP(CHANGELOG, 1)] == 100
