"""Keys whose state holds events not judged yet, and the tick records that get them judged."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from streamapp.rules.base import State
from streamapp.types import RecordSink

__all__ = ["TICK", "HeldKeys", "send_ticks"]

logger = logging.getLogger(__name__)

#: the value of a tick record: judge every event the key holds (it has been quiet for the grace)
TICK = b'{"tick":1}'


class HeldKeys:
    """Keys whose state holds events not judged yet, and since when (wall time), per table.

    A key that gets no newer event would hold them forever; :meth:`due` names those held for
    the grace, and the detector's tick task sends each a tick record through its own topic
    partition, so that the judging happens in the stream, in order with the key's events.
    """

    def __init__(self) -> None:
        self._since: dict[tuple[int, bytes], float] = {}

    def update(self, partition: int, key: bytes, state: State, now: float) -> None:
        if state.get("pending"):
            self._since.setdefault((partition, key), now)
        else:
            self._since.pop((partition, key), None)

    def due(self, now: float, grace: float) -> list[tuple[int, bytes]]:
        """Keys held for at least ``grace`` seconds; each is due again only after another grace."""
        due = [held for held, since in self._since.items() if now - since >= grace]
        for held in due:
            self._since[held] = now
        return due

    def __len__(self) -> int:
        return len(self._since)


async def send_ticks(topic: str, held: HeldKeys, grace: float, new_sink: Callable[[], RecordSink]) -> None:
    """Every second, a tick record to each key that has held events for the grace (wall time)."""
    while True:
        await asyncio.sleep(1.0)
        due = held.due(time.time(), grace)
        if not due:
            continue
        try:
            batches = new_sink()
            await batches.prepare(topic)
            for partition, key in due:
                batches.add(topic, key, TICK, partition)
            for delivery in await batches.send():
                await delivery.future
        except Exception:  # the key stays held: the next round sends its tick again
            logger.exception("sending ticks to %s failed", topic)
