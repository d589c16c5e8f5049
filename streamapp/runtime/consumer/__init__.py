"""Consuming: whole fetched batches of a topic go to one handler, past faust's per-record streams."""

from streamapp.runtime.consumer.agent_streams import drain_to_router, records_of_events
from streamapp.runtime.consumer.batch_consumer import *  # noqa: F403
from streamapp.runtime.consumer.batch_consumer import __all__ as _batch_names
from streamapp.runtime.consumer.consumer_thread import FETCH_MAX_WAIT_MS
from streamapp.runtime.consumer.fence import MembershipLost, check_membership

__all__ = [
    *_batch_names,
    "FETCH_MAX_WAIT_MS",
    "MembershipLost",
    "check_membership",
    "drain_to_router",
    "records_of_events",
]
