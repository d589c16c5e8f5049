"""Consuming: whole fetched batches of a topic go to one handler, past faust's per-record streams."""

from streamapp.runtime.consumer.batch_consumer import (
    BatchConsumer,
    BatchHandler,
    NotProcessed,
    abandon_before_waiting,
    drain_to_router,
    records_of_events,
)

__all__ = [
    "BatchConsumer",
    "BatchHandler",
    "NotProcessed",
    "abandon_before_waiting",
    "drain_to_router",
    "records_of_events",
]
