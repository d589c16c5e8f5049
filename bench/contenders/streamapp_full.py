"""Contender: the same worker with both login rules (every login also re-keyed by user)."""

from __future__ import annotations

from bench.contenders.streamapp_worker import FULL_RULES, streamapp_pipeline
from bench.data import Dataset
from bench.harness import Bench, Outcome


def streamapp_full(bench: Bench, data: Dataset, prefix: str) -> Outcome:
    """The whole login pipeline: ``brute_force`` and ``account_takeover`` (``logins-by-user`` hop)."""
    return streamapp_pipeline(bench, data, prefix, rules=FULL_RULES)
