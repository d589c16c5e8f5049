"""The liveness watchdog: an owned partition with lag and no progress for a set time fails GET /live."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from faust.types import TP

__all__ = ["PartitionProgress", "Stall", "StallWatchdog"]


@dataclass(frozen=True)
class PartitionProgress:
    """What the consumer knows of one owned partition at one look.

    ``done``: the offset processing has reached (the committed offset, else the last read + 1);
    ``read``: the last offset handed to a handler (None before the first); ``position``: the next
    offset the consumer will fetch (None when unknown); ``highwater``: the end of the partition.
    """

    done: int
    highwater: int
    read: int | None = None
    position: int | None = None

    @property
    def lag(self) -> int:
        return max(0, self.highwater - self.done)

    @property
    def waiting(self) -> bool:
        """Records wait for this worker.

        Not when the consumer has fetched to the end and everything it handed on is done: the
        gap is then transaction markers (exactly-once writes one after each commit), not records.
        """
        if self.lag == 0:
            return False
        fetched_all = self.position is not None and self.position >= self.highwater
        handled_all = self.read is None or self.read + 1 <= self.done
        return not (fetched_all and handled_all)


@dataclass(frozen=True)
class Stall:
    """One partition that waits without progress."""

    tp: TP
    lag: int
    seconds: float


class StallWatchdog:
    """Remembers when each owned partition last made progress; names those stalled too long.

    :meth:`observe` is called with the consumer's view of its partitions every few seconds while
    the worker is ready; :meth:`pause` while it is not (recovery, rebalance: no progress is
    expected then, and a restart would only start them again). When neither has been called for
    ``stall_seconds`` since the first look, the watchdog itself has stopped, and that counts too
    (before the first look the worker is starting: its orchestrator's start period covers that).
    """

    def __init__(self, stall_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_seconds = stall_seconds
        self._clock = clock
        self._last_look: float | None = None
        #: tp -> (progress marker, when it last changed or the partition stopped waiting, lag)
        self._seen: dict[TP, tuple[tuple[int, int | None], float, int]] = {}

    def observe(self, partitions: Mapping[TP, PartitionProgress]) -> list[Stall]:
        """Take one look at the owned partitions; return the stalled ones."""
        now = self._clock()
        self._last_look = now
        seen: dict[TP, tuple[tuple[int, int | None], float, int]] = {}
        for tp, progress in partitions.items():
            marker = (progress.done, progress.read)
            before = self._seen.get(tp)
            if before is None or before[0] != marker or not progress.waiting:
                seen[tp] = (marker, now, progress.lag if progress.waiting else 0)
            else:
                seen[tp] = (marker, before[1], progress.lag)
        self._seen = seen  # partitions no longer owned are forgotten
        return self.stalled()

    def pause(self) -> None:
        """The worker is not ready: nothing is expected to progress, every timer starts again."""
        self._last_look = self._clock()
        self._seen.clear()

    def stalled(self) -> list[Stall]:
        """Partitions with records waiting and no progress for ``stall_seconds``."""
        now = self._clock()
        return sorted(
            (
                Stall(tp, lag, now - since)
                for tp, (_, since, lag) in self._seen.items()
                if lag > 0 and now - since >= self.stall_seconds
            ),
            key=lambda stall: (stall.tp.topic, stall.tp.partition),
        )

    def silent_seconds(self) -> float | None:
        """How long the watchdog has not looked, when that is ``stall_seconds`` or more, else None."""
        if self._last_look is None:
            return None
        silent = self._clock() - self._last_look
        return silent if silent >= self.stall_seconds else None

    def live(self) -> bool:
        return not self.stalled() and self.silent_seconds() is None

    def report(self) -> tuple[bool, dict[str, Any]]:
        """Live or not, and the body of GET /live: the stalled partitions named."""
        stalls = self.stalled()
        silent = self.silent_seconds()
        if not stalls and silent is None:
            return True, {"status": "live"}
        body: dict[str, Any] = {
            "status": "stalled",
            "stall_seconds": self.stall_seconds,
            "stalled": [
                {
                    "topic": st.tp.topic,
                    "partition": st.tp.partition,
                    "lag": st.lag,
                    "seconds": round(st.seconds, 1),
                }
                for st in stalls
            ],
        }
        if silent is not None:
            body["watchdog_silent_seconds"] = round(silent, 1)
        return False, body
