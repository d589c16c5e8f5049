"""Producing: many records per call, as Kafka record batches."""

from streamapp.runtime.producer.metadata import keep_metadata_of
from streamapp.runtime.producer.record_batches import (
    BatchSender,
    Delivery,
    RecordBatches,
    key_partition,
    murmur2,
)

__all__ = ["BatchSender", "Delivery", "RecordBatches", "keep_metadata_of", "key_partition", "murmur2"]
