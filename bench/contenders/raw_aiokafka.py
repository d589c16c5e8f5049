"""Contender: a raw aiokafka ``getmany`` + orjson loop (apps/raw_consume.py), the Python client's ceiling."""

from __future__ import annotations

import os
import sys

from bench.data import Dataset
from bench.harness import Bench, Outcome, progress_contender


def raw_aiokafka(bench: Bench, data: Dataset) -> Outcome:
    """aiokafka ``getmany`` + orjson decode + a dict of failed logins per IP: the Python client's ceiling."""
    out = Outcome("raw aiokafka + orjson loop")
    group = bench.name("raw" + bench.r)
    env = {**os.environ, "BENCH_BROKER": bench.bootstrap, "BENCH_GROUP": group, "BENCH_TOPIC": data.topic}
    return progress_contender(
        bench,
        out,
        [sys.executable, "-m", "bench.contenders.apps.raw_consume"],
        env,
        group,
        data.topic,
        data.events,
    )
