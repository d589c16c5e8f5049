"""Consuming: whole fetched batches of a topic go to one handler, past faust's per-record streams."""

from streamapp.runtime.consumer.batch_consumer import (
    BatchConsumer,
    BatchHandler,
    NotProcessed,
    abandon_before_waiting,
    consume_in_batches,
    records_of_events,
)
from streamapp.runtime.consumer.fence import MembershipLost, check_membership

__all__ = [
    "BatchConsumer",
    "BatchHandler",
    "MembershipLost",
    "NotProcessed",
    "abandon_before_waiting",
    "check_membership",
    "consume_in_batches",
    "records_of_events",
]
