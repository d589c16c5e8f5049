"""detection_state: per detection and key (``name NUL entity``), the engine's JSON state."""

from __future__ import annotations

from tables.base import define_table

__all__ = ["detection_state"]

detection_state = define_table(
    "detection-state",
    help="name NUL entity -> {shape, clock, settled, src, pending, ev, alerted, n, s, q, firsts, last, la}",
)
