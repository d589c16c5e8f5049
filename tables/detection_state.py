"""detection_state: per detection and key (``name\\0entity``), the engine's JSON state (RocksDB, changelog)."""

from __future__ import annotations

from tables.base import define_table

__all__ = ["detection_state"]

detection_state = define_table(
    "detection-state",
    help="detection name NUL entity -> {shape, clock, settled, src, pending, ev, alerted, n, s, q, firsts, last, la}",
)
