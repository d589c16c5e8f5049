"""Producing: many records per call, as Kafka record batches."""

from streamapp.producer.record_batches import Delivery, RecordBatches, key_partition, murmur2

__all__ = ["Delivery", "RecordBatches", "key_partition", "murmur2"]
