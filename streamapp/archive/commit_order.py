"""The order the archiver commits in: a partition only once every earlier object of it is uploaded."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from aiokafka import TopicPartition

__all__ = ["CommitOrder", "Committable"]


@dataclass
class _Upload:
    last: int
    records: int
    done: bool = False


@dataclass(frozen=True)
class Committable:
    """A partition may commit ``offset``: ``records`` in ``objects`` uploaded objects became covered."""

    offset: int
    records: int
    objects: int


class CommitOrder:
    """Which offset each partition may commit as its uploads finish, in whatever order they finish.

    An object's end is committed only once every earlier object of its partition is uploaded too:
    committing after a later object while an earlier one is still uploading would lose the earlier
    one's records if the process died before that upload ended (a restart starts after the commit).
    """

    def __init__(self) -> None:
        self._uploads: dict[TopicPartition, deque[_Upload]] = {}

    def started(self, tp: TopicPartition, last: int, records: int) -> None:
        """An upload of ``tp``'s next object (ending at offset ``last``) began."""
        self._uploads.setdefault(tp, deque()).append(_Upload(last, records))

    def finished(self, tp: TopicPartition, last: int) -> Committable | None:
        """The upload ending at ``last`` is done: what ``tp`` may commit now, or None while an
        earlier upload of ``tp`` is unfinished (its own finishing then covers this one)."""
        uploads = self._uploads.get(tp)
        upload = next((u for u in uploads or () if u.last == last), None)
        if uploads is None or upload is None:
            return None  # forgotten: the partition was given up meanwhile
        upload.done = True
        offset, records, objects = -1, 0, 0
        while uploads and uploads[0].done:
            first_done = uploads.popleft()
            offset, records, objects = first_done.last + 1, records + first_done.records, objects + 1
        if not uploads:
            del self._uploads[tp]
        return Committable(offset, records, objects) if objects else None

    def pending(self, tp: TopicPartition) -> int:
        """Uploads of ``tp`` not yet committable."""
        return len(self._uploads.get(tp, ()))

    def forget(self, tp: TopicPartition) -> None:
        """Drop what is known of ``tp`` (given up: its next owner starts after what was committed)."""
        self._uploads.pop(tp, None)
