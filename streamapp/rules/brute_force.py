"""brute_force: more than N failed logins from one IP within 60 s of event time."""

from __future__ import annotations

from streamapp.rules.sliding_count import SlidingCount

__all__ = ["BRUTE_FORCE"]

BRUTE_FORCE = SlidingCount(kind="brute_force", noun="failed logins from")
