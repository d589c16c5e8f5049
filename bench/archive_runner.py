"""The archive scenario's process: streamapp's Archiver over the bench's logins, with a progress file.

Run as ``python -m bench.archive_runner`` with the ``STREAMAPP_*`` settings of the archive (the
broker, app id, topic prefix, ``STREAMAPP_ARCHIVE_*``), ``BENCH_EXPECT`` and ``BENCH_PROGRESS``.
It is :class:`streamapp.archive.archiver.Archiver` unchanged in what it does per record and per
object; the subclass only counts (the clock starts at the partition assignment, as for the raw
aiokafka loop, once the archiver has looked up in the bucket where each partition resumes; a
record counts once its object is uploaded and its offset committed), times the uploads and the
fetch loop's waits for a free upload slot, keeps to
the ``logins`` topic (the other archived topics of the bench's prefix do not exist), uploads what
it holds once every expected record has been read (a live archiver would wait the roll age for
more records; there are none) and stops there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from bench.progress import ProgressFile
from streamapp.archive.archiver import Archiver, Committable
from streamapp.archive.store import ArchiveStore
from streamapp.settings import Settings, load_settings

__all__ = ["CountingArchiver", "main"]

logger = logging.getLogger("bench.archive_runner")


class CountingArchiver(Archiver):
    """The archiver, counting records in committed objects into a progress file."""

    def __init__(self, settings: Settings, progress: ProgressFile, expect: int) -> None:
        super().__init__(settings, ArchiveStore(settings), topics=("logins",))
        self.progress = progress
        self.expect = expect
        self.upload_seconds = 0.0  # building, encoding, uploading and committing, summed over uploads
        self.wait_seconds = 0.0  # the fetch loop waiting for a free upload slot

    async def resume(self) -> None:
        await super().resume()  # lists the bucket: start-up, like the group join
        self.progress.start()  # fetching starts once this returns

    async def _upload(self, tp: TopicPartition, records: list[Any]) -> None:
        started = time.monotonic()
        await super()._upload(tp, records)  # upload, then commit once every earlier object is uploaded
        self.upload_seconds += time.monotonic() - started

    async def _commit(self, tp: TopicPartition, ready: Committable) -> None:
        await super()._commit(tp, ready)
        # commits of several partitions run concurrently: tick what no other tick counted yet
        if self.stats.committed > self.progress.count:
            self.progress.tick(self.stats.committed - self.progress.count)
        if self.stats.committed >= self.expect:
            self.stop()

    async def _wait_for_upload_slot(self) -> None:
        started = time.monotonic()
        await super()._wait_for_upload_slot()
        self.wait_seconds += time.monotonic() - started

    def _due(self, now: float) -> list[TopicPartition]:
        held = sum(len(buffer.records) for buffer in self.buffers.values())
        if self.rolled + held >= self.expect:  # the whole topic is read: nothing more to wait for
            return [tp for tp, buffer in self.buffers.items() if buffer.records]
        return super()._due(now)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    expect = int(os.environ["BENCH_EXPECT"])
    progress = ProgressFile(os.environ["BENCH_PROGRESS"], expect)
    archiver = CountingArchiver(load_settings(os.environ), progress, expect)

    async def run() -> None:
        # SIGTERM (the bench stopping it) ends it as `streamapp archive run` does: held records uploaded
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, archiver.stop)
        stats = await archiver.run()
        # written while the handler is installed: the bench sends SIGTERM once every record is
        # committed, and once the loop is closed that would end the process before the file is there
        Path(os.environ["BENCH_PROGRESS"]).with_suffix(".stats.json").write_text(
            json.dumps(
                {
                    "records": stats.records,
                    "objects": stats.objects,
                    "bytes": stats.bytes,
                    "upload_seconds": archiver.upload_seconds,
                    "wait_seconds": archiver.wait_seconds,
                }
            )
        )

    asyncio.run(run())


if __name__ == "__main__":
    main()
