"""detection_state: per detection and key (``name NUL entity``), the engine's JSON state; and which run."""

from __future__ import annotations

from streamapp.app import settings
from streamapp.detections.control import Registry
from tables.base import define_table

__all__ = ["detection_name", "detection_state", "registry"]

detection_state = define_table(
    "detection-state",
    help="name NUL entity -> {shape, clock, settled, src, pending, ev, alerted, n, s, q, firsts, last, la}",
)
#: the detections this worker runs, as the control topic says (agents.run_detections follows it;
#: the views read the states of those that run)
registry = Registry(retention=settings.retention_seconds)


def detection_name(key: bytes) -> str:
    """The detection a key of ``detection-state`` (``name NUL entity``) belongs to."""
    return key.partition(b"\x00")[0].decode(errors="replace")
