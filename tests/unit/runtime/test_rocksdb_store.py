"""The tables' store: a rebalance that revokes none of a table's partitions costs no garbage collection."""

from __future__ import annotations

import gc

from faust.types import TP

from streamapp.runtime import rocksdb_store


def test_the_app_store_url_selects_the_streamapp_store(make_table) -> None:
    assert isinstance(make_table().data, rocksdb_store.RocksDBStore)


def test_revoking_other_topics_partitions_collects_nothing(make_table, monkeypatch) -> None:
    table = make_table()
    collections: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda *a: collections.append(1) or 0)
    table.data.revoke_partitions(table, {TP("some-other-topic", 0)})
    table.data.revoke_partitions(table, set())
    assert collections == []


def test_revoking_a_partition_of_the_table_closes_its_database(make_table, monkeypatch) -> None:
    table = make_table()
    store = table.data
    tp = TP(table.changelog_topic.get_topic_name(), 0)
    store._db_for_partition(0)  # opens the partition's database
    assert 0 in store._dbs
    collections: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda *a: collections.append(1) or 0)
    store.revoke_partitions(table, {tp})
    assert 0 not in store._dbs
    assert collections == [1]
