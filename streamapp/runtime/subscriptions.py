"""Topics a running worker starts to consume, each routed to one batch handler, without a restart.

faust fixes an agent's topics when the worker starts, and its own resubscribing loop waits 45 s
after a change. Here a topic asked for (:meth:`LiveTopics.want`) gets its route in the app's
router first, then a channel of its own in faust's conductor, and the consumer subscribes at
once: the group rebalances and the topic's partitions are spread over the workers like any
other's. Every worker asks for the same topics (they follow the same control topic), so each
rebalance ends with the topic subscribed by all of them.

A topic is read from its committed offsets, or from its earliest offset when the group has none
(``consumer_auto_offset_reset``): records produced before the subscription are not lost. A
missing topic is created, with ``STREAMAPP_PARTITIONS`` partitions and the app's replication,
like every topic the app declares. A topic once subscribed stays subscribed until the worker
stops (leaving it would be one more rebalance; its records then go to a handler with nothing
to do).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

import faust

from streamapp.runtime.faust_compat import subscribe_also, subscribed_topics
from streamapp.types import BatchHandler

__all__ = ["LiveTopics"]

logger = logging.getLogger(__name__)

#: how often the subscription is compared with the topics asked for (a change wakes it at once)
CHECK_SECONDS = 1.0
#: how long a subscription waits for a rebalance in progress to end before going ahead anyway
REBALANCE_WAIT_SECONDS = 10.0


class LiveTopics:
    """The topics routed to ``handler`` (standing for the agent ``agent``): those of the start and
    those asked for since, subscribed by :meth:`run` (an app task)."""

    def __init__(
        self, app: faust.App, handler: BatchHandler, agent: str, at_start: Iterable[str], partitions: int
    ) -> None:
        self.app = app
        self.handler = handler
        self.agent = agent
        self.partitions = partitions
        #: full topic names this worker subscribes to (or is about to, with ``pending``)
        self.topics: set[str] = set(at_start)
        #: asked for, not subscribed yet
        self.pending: set[str] = set()
        #: topic -> seconds from the ask until the consumer subscribed (logged)
        self.took: dict[str, float] = {}
        self._asked: dict[str, float] = {}
        #: topic -> its channel in faust's conductor (one per topic, also when a subscribe is retried)
        self._channels: dict[str, faust.TopicT] = {}
        self._changed: asyncio.Event | None = None

    def want(self, topic: str) -> None:
        """Consume ``topic`` too (a full name), from now on; nothing for a topic already consumed."""
        if topic in self.topics:
            return
        self.topics.add(topic)
        self.pending.add(topic)
        self._asked[topic] = time.monotonic()
        if self._changed is not None:
            self._changed.set()

    def subscribed(self, topic: str) -> bool:
        return topic in self.topics and topic not in self.pending

    async def run(self) -> None:
        """Subscribe to what is asked for, for as long as the worker runs (a failure is retried)."""
        self._changed = asyncio.Event()
        # the first subscription is faust's, once the agents have started; what was asked for
        # before it is subscribed right after (one more rebalance, at start)
        # (faust signals neither this nor the end of a rebalance to an app: polled)
        while not subscribed_topics(self.app):  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        while True:
            self._changed.clear()
            try:
                await self._subscribe()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("subscribing to %s failed; retrying", ", ".join(sorted(self.pending)))
            try:
                await asyncio.wait_for(self._changed.wait(), CHECK_SECONDS)
            except TimeoutError:
                pass

    async def _subscribe(self) -> None:
        if not self.pending:
            return
        await self._after_rebalance()
        router = self.app.batch_router  # type: ignore[attr-defined]
        asked = set(self.pending)
        for topic in sorted(asked - self._channels.keys()):
            if topic not in router.handlers:  # routed before any record of it can be fetched
                router.declare(topic, self.handler, self.agent)
            self._channels[topic] = self.app.topic(
                topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                partitions=self.partitions, internal=True,
            )  # fmt: skip
        await subscribe_also(self.app, [self._channels[topic] for topic in asked])
        now = time.monotonic()
        for topic in asked:
            self.took[topic] = now - self._asked.get(topic, now)
        self.pending -= asked
        logger.info(
            "subscribed to %s while running (%s)", ", ".join(sorted(asked)),
            ", ".join(f"{t}: {self.took[t]:.2f} s after it was asked for" for t in sorted(asked)),
        )  # fmt: skip

    async def _after_rebalance(self) -> None:
        # a subscription during a rebalance would start another at once (faust waits too)
        deadline = time.monotonic() + REBALANCE_WAIT_SECONDS
        while self.app.rebalancing and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
