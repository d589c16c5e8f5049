"""The worker's event clock, shared by the agents that advance it and the views that read it."""

from __future__ import annotations

from streamapp.app import settings
from streamapp.rules.windows import EventClock

__all__ = ["worker_clock"]

worker_clock = EventClock(settings.retention_seconds)
