"""What every rule's per-key state shares: replay protection by source position."""

from __future__ import annotations

from typing import Any

__all__ = ["State", "seen_before"]

State = dict[str, Any]


def seen_before(state: State, source_partition: int, source_offset: int) -> bool:
    """True if this source record was already applied to ``state``; otherwise remember it.

    After a crash, at-least-once delivery hands some records to the rule again. The events of one
    key from one source partition arrive in offset order, so remembering the newest offset per
    source partition makes every update idempotent and counts stay exact.
    """
    positions: dict[str, int] = state.setdefault("src", {})
    part = str(source_partition)
    last = positions.get(part)
    if last is not None and source_offset <= last:
        return True
    positions[part] = source_offset
    return False
