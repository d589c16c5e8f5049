"""Consuming: whole fetched batches of a topic go to one handler, past faust's per-record streams."""

from streamapp.runtime.consumer.batch_consumer import *  # noqa: F403
from streamapp.runtime.consumer.batch_consumer import __all__ as __all__
