"""Contender: the same worker with both login detections (every login also to account takeover)."""

from __future__ import annotations

from bench.contenders.streamapp_worker import FULL_RULES, streamapp_pipeline
from bench.data import Dataset
from bench.harness import Bench, Outcome


def streamapp_full(bench: Bench, data: Dataset, prefix: str) -> Outcome:
    """The whole login pipeline: the shipped ``brute_force`` and ``account_takeover`` specs."""
    return streamapp_pipeline(bench, data, prefix, rules=FULL_RULES)
