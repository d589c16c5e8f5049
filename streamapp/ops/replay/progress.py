"""How far the replay is: the new app id's committed offsets turned into the progress line."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streamapp.ops.replay.offsets import existing_partitions

__all__ = ["Progress", "ProgressMeter", "format_count", "measure"]

#: seconds over which the progress line's records/s is measured
RATE_WINDOW_SECONDS = 10.0


def format_count(n: float) -> str:
    """``12,345``."""
    return f"{n:,.0f}"


@dataclass(frozen=True)
class Progress:
    """One measurement of how far the replay is.

    The work is two steps: every source record is routed to by-entity topics, and every
    by-entity record updates a table. Both count as records processed.
    """

    elapsed: float
    #: source records the new app id has consumed and committed since its start offsets
    source_done: int
    #: source records between the start offsets and the end offsets captured at start
    source_total: int
    #: by-entity records the new app id has committed
    internal_done: int
    #: records on the by-entity topics that the new app id has not yet committed
    internal_lag: int
    #: records processed (both steps) per second over the last few seconds
    rate: float
    worker_ready: bool

    @property
    def source_finished(self) -> bool:
        return self.source_done >= self.source_total

    @property
    def internal_total(self) -> int:
        """By-entity records the replay makes: exact once the source is done, else estimated.

        The estimate scales what the routed records made so far (a failed login makes two).
        """
        made = self.internal_done + self.internal_lag
        if self.source_finished:
            return made
        if not self.source_done:
            return self.source_total
        return max(made, round(made * self.source_total / self.source_done))

    @property
    def percent(self) -> float:
        total = self.source_total + self.internal_total
        return 100.0 if not total else 100.0 * (self.source_done + self.internal_done) / total

    @property
    def eta(self) -> float | None:
        """Seconds until caught up at the current rate (None: not known yet)."""
        remaining = self.source_total - self.source_done + self.internal_total - self.internal_done
        if remaining <= 0:
            return 0.0
        return remaining / self.rate if self.rate > 0 else None

    @property
    def caught_up(self) -> bool:
        """Source topics at the end offsets captured at start, nothing left on by-entity topics."""
        return self.worker_ready and self.source_finished and self.internal_lag == 0

    def describe(self) -> str:
        """The progress line."""
        eta = self.eta
        estimated = "" if self.source_finished else "~"
        line = (
            f"replay {self.percent:5.1f}%"
            f"  source {format_count(self.source_done)}/{format_count(self.source_total)}"
            f"  by-entity {format_count(self.internal_done)}/{estimated}{format_count(self.internal_total)}"
            f"  {format_count(self.rate)} records/s"
            f"  ETA {'?' if eta is None else f'{eta:.0f} s'}  {self.elapsed:.0f} s"
        )
        return line if self.worker_ready else f"{line}  (worker starting)"


class ProgressMeter:
    """Turns measurements into :class:`Progress`, with records/s over a sliding window."""

    def __init__(self, source_total: int, started: float, window: float = RATE_WINDOW_SECONDS) -> None:
        self.source_total = source_total
        self.started = started
        self.window = window
        #: when the worker was first seen ready (None: not yet)
        self.ready_at: float | None = None
        self._samples: deque[tuple[float, int]] = deque()

    @property
    def startup_seconds(self) -> float | None:
        """Seconds from the start until the worker was ready (recovered, partitions assigned)."""
        return None if self.ready_at is None else self.ready_at - self.started

    def update(
        self, now: float, source_done: int, internal_done: int, internal_lag: int, worker_ready: bool
    ) -> Progress:
        if worker_ready and self.ready_at is None:
            self.ready_at = now
        rate = 0.0
        processed = source_done + internal_done
        if worker_ready:
            self._samples.append((now, processed))
            while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
                self._samples.popleft()
            first_at, first_processed = self._samples[0]
            rate = (processed - first_processed) / (now - first_at) if now > first_at else 0.0
        else:
            self._samples.clear()  # a worker that is starting up says nothing about the speed
        return Progress(
            elapsed=now - self.started,
            source_done=source_done,
            source_total=self.source_total,
            internal_done=internal_done,
            internal_lag=internal_lag,
            rate=max(rate, 0.0),
            worker_ready=worker_ready,
        )


async def measure(
    admin: AIOKafkaAdminClient,
    offsets: AIOKafkaConsumer,
    new_id: str,
    sources: Mapping[TopicPartition, tuple[int, int]],
    internal_topics: Iterable[str],
    internal_parts: dict[str, list[TopicPartition]],
) -> tuple[int, int, int]:
    """``(source_done, internal_done, internal_lag)`` from the group's committed offsets.

    ``internal_parts`` caches the partitions of by-entity topics (created by the worker after it
    starts); topics are looked up in the full listing, never by name, which could create them.
    """
    committed = {tp: meta.offset for tp, meta in (await admin.list_consumer_group_offsets(new_id)).items()}
    source_done = sum(
        min(max(committed.get(tp, start) - start, 0), end - start) for tp, (start, end) in sources.items()
    )
    missing = [t for t in internal_topics if t not in internal_parts]
    if missing:
        for tp in await existing_partitions(admin, missing):
            internal_parts.setdefault(tp.topic, []).append(tp)
    parts = [tp for tps in internal_parts.values() for tp in tps]
    ends = await offsets.end_offsets(parts) if parts else {}
    internal_done = sum(max(committed.get(tp, 0), 0) for tp in parts)
    internal_lag = sum(max(ends[tp] - max(committed.get(tp, 0), 0), 0) for tp in parts)
    return source_done, internal_done, internal_lag
