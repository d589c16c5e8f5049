"""Producing: many records per call, as Kafka record batches."""

from streamapp.producer.record_batches import BatchSender, Delivery, RecordBatches, key_partition, murmur2

__all__ = ["BatchSender", "Delivery", "RecordBatches", "key_partition", "murmur2"]
