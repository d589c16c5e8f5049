"""What a batch handler raises (or a delivery fails with) to give its records up without a crash."""

from __future__ import annotations

__all__ = ["NotProcessed"]


class NotProcessed(Exception):
    """A batch or delivery failing with this gives its records up: not acknowledged, read again, no crash."""
