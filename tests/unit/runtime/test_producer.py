"""key_partition picks the partition Kafka's default partitioner (murmur2) picks, like aiokafka and Java."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from streamapp.runtime.producer import key_partition, murmur2


@pytest.mark.parametrize("partitions", [1, 4, 8, 12])
def test_key_partition_matches_aiokafka_default_partitioner(partitions: int) -> None:
    partitioner = DefaultPartitioner()
    keys = [b"198.51.100.7", b"user42", b"sensor-3", b"\x00\xff", b"card-4111111111111111"]
    all_partitions = list(range(partitions))
    for key in keys:
        assert key_partition(key, partitions) == partitioner(key, all_partitions, all_partitions)


def test_murmur2_equals_aiokafkas_for_keys_of_every_length() -> None:
    rng = random.Random(7)
    keys = [rng.randbytes(length) for length in range(300) for _ in range(5)]
    assert [murmur2(key) for key in keys] == [aiokafka_murmur2(key) for key in keys]


def test_murmur2_is_kafkas() -> None:
    # Kafka's own UtilsTest: murmur2("21") == -973932308 as a signed 32-bit int (aiokafka: unsigned)
    assert murmur2(b"21") - (1 << 32) == -973932308
    assert key_partition(b"21", 8) == (-973932308 & 0x7FFFFFFF) % 8
