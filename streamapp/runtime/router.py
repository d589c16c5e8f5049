"""The app's router: which batch handler takes the fetched records of each topic.

The routes are declared in one place, where the app is assembled (streamapp.app.declare_routes);
the batch consumer (streamapp.runtime.consumer) hands every fetch of a routed topic to
:meth:`Router.handle`. Nothing registers itself here on import.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aiokafka.structs import ConsumerRecord

from streamapp.runtime.producer import Delivery
from streamapp.types import BatchHandler

__all__ = ["Router"]


class Router:
    """Topic name -> the batch handler of its records.

    ``assemble`` declares the routes; it runs at the first look-up (on a worker: the first
    fetch, once every agent module is imported), or at once with :meth:`assemble_now`.
    """

    def __init__(self, assemble: Callable[[Router], None] | None = None) -> None:
        self._handlers: dict[str, BatchHandler] = {}
        #: (topic, agent name) -> that agent's handler of the topic
        self._by_agent: dict[tuple[str, str], BatchHandler] = {}
        self._assemble = assemble

    def assemble_with(self, assemble: Callable[[Router], None]) -> None:
        """Declare the routes with ``assemble`` at the first look-up."""
        self._assemble = assemble

    def assemble_now(self) -> Router:
        assemble, self._assemble = self._assemble, None
        if assemble is not None:
            assemble(self)
        return self

    def declare(self, topic: str, handler: BatchHandler, agent: str) -> None:
        """Records of ``topic`` go to ``handler``, which stands for the faust agent named ``agent``.

        A second handler of a topic gets every batch too (the detections' router reads
        sensor-readings beside route-sensor-readings).
        """
        existing = self._handlers.get(topic)
        self._handlers[topic] = handler if existing is None else _both(existing, handler)
        self._by_agent[(topic, agent)] = handler

    @property
    def handlers(self) -> dict[str, BatchHandler]:
        """Every route (declared now if not yet)."""
        if self._assemble is not None:
            self.assemble_now()
        return self._handlers

    def __contains__(self, topic: object) -> bool:
        return topic in self.handlers

    def handler_for(self, topic: str) -> BatchHandler:
        handler = self.handlers.get(topic)
        if handler is None:
            raise LookupError(f"no batch handler declared for topic {topic!r} (streamapp.app.declare_routes)")
        return handler

    async def handle(self, topic: str, records: Sequence[ConsumerRecord]) -> list[Delivery]:
        """Hand records of ``topic`` to its handler; the deliveries to wait for before acknowledging them."""
        return await self.handler_for(topic)(records)

    async def handle_for_agent(
        self, agent: str, topic: str, records: Sequence[ConsumerRecord]
    ) -> list[Delivery]:
        """Hand records that reached ``agent``'s stream to that agent's handler of ``topic`` alone.

        (faust gives every agent of a topic each record: the other agents' streams have it too.)
        """
        if self._assemble is not None:
            self.assemble_now()
        handler = self._by_agent.get((topic, agent))
        if handler is None:
            raise LookupError(f"agent {agent!r} declared no batch handler for topic {topic!r}")
        return await handler(records)


def _both(first: BatchHandler, second: BatchHandler) -> BatchHandler:
    async def both(records: Sequence[ConsumerRecord]) -> list[Delivery]:
        return [*(await first(records)), *(await second(records))]

    return both
