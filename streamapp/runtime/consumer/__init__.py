"""Consuming: whole fetched batches of a topic go to one handler, past faust's per-record streams."""

from streamapp.runtime.consumer.batch_consumer import *  # noqa: F403
from streamapp.runtime.consumer.batch_consumer import __all__ as _batch_names
from streamapp.runtime.consumer.fence import MembershipLost, check_membership

__all__ = [*_batch_names, "MembershipLost", "check_membership"]
