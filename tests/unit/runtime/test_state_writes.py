"""A batch's states: in each partition's RocksDB at once, and each in the changelog of its partition."""

from __future__ import annotations

from collections.abc import Callable

import faust
import orjson

from tables.base import load_state, store_states
from tests.unit.fakes import FakeSink


def test_a_batch_of_states_is_in_rocksdb_and_the_changelog_of_each_key_partition(
    make_table: Callable[..., faust.Table],
) -> None:
    table = make_table(key_type=bytes, partitions=4)
    states = [(0, b"10.0.0.1", {"n": 1}), (3, b"10.0.0.2", {"n": [2, 3]}), (0, b"10.0.0.3", {"n": None})]
    sink = FakeSink()

    sizes = store_states(table, states, sink)

    assert sizes == [len(orjson.dumps(state)) for _, _, state in states]
    for partition, key, state in states:
        assert load_state(table, partition, key) == state
    assert load_state(table, 3, b"10.0.0.1") is None  # not in the other partition's database
    changelog = table.changelog_topic.get_topic_name()
    assert [(s.topic, s.partition, s.key, orjson.loads(s.value or b"")) for s in sink.queued] == [
        (changelog, partition, key, state) for partition, key, state in states
    ]
    assert table.data._key_index[b"10.0.0.2"] == 3  # the views find the key's partition
