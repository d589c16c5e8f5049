"""A progress file each contender process keeps: events seen, first and last event times."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Progress", "ProgressFile", "read_progress"]

#: how often (in events) the file is rewritten between the first and the last event
_EVERY = 5000


@dataclass(frozen=True)
class Progress:
    """What a contender reported: ``count`` events, the newest at ``last``; ``first_count`` at ``first``."""

    count: int
    first_count: int
    first: float | None
    last: float | None
    done: bool

    def rate(self) -> float | None:
        """Events per second from the first report to the newest (None before two reports)."""
        if (
            self.first is None
            or self.last is None
            or self.count <= self.first_count
            or self.last <= self.first
        ):
            return None
        return (self.count - self.first_count) / (self.last - self.first)


class ProgressFile:
    """Counts events in a contender and rewrites ``path`` now and then (atomically).

    ``tick(n)`` costs an integer increment on the hot path; the file is written at the first
    tick, every 5,000 events and when ``expect`` events have been seen.
    """

    def __init__(self, path: str | Path, expect: int) -> None:
        self.path = Path(path)
        self.expect = expect
        self.count = 0
        self.first: float | None = None
        self.first_count = 0
        self._next_write = 1

    def start(self) -> None:
        """Start the clock now, before the first event (for a consumer: when it gets its partitions)."""
        if self.first is None:
            now = time.time()
            self.first, self.first_count = now, self.count
            self._write(now, False)

    def tick(self, n: int = 1) -> None:
        self.count += n
        if self.count >= self._next_write:
            now = time.time()
            if self.first is None:
                self.first, self.first_count = now, self.count
            done = self.count >= self.expect
            self._write(now, done)
            self._next_write = min(self.count + _EVERY, self.expect) if not done else 1 << 62

    def _write(self, now: float, done: bool) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "count": self.count,
                    "first_count": self.first_count,
                    "first": self.first,
                    "last": now,
                    "done": done,
                }
            )
        )
        os.replace(tmp, self.path)


def read_progress(path: str | Path) -> Progress:
    """The contender's latest report (zero events when it has written nothing yet)."""
    try:
        data = json.loads(Path(path).read_text())
    except (FileNotFoundError, ValueError):
        return Progress(0, 0, None, None, False)
    return Progress(
        int(data["count"]), int(data["first_count"]), data["first"], data["last"], bool(data["done"])
    )
