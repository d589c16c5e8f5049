"""Contender: Faust as its docs show it, in a ``faust worker`` of its own (apps/faust_idiomatic.py)."""

from __future__ import annotations

import os
import sys

from bench.data import Dataset
from bench.harness import Bench, Outcome, progress_contender
from bench.procs import free_port


def faust_idiomatic(bench: Bench, data: Dataset) -> Outcome:
    """Faust as its docs show it: a hopping (60 s, step 10 s) windowed table, RocksDB + changelog."""
    out = Outcome("Faust idiomatic (hopping windowed table)")
    app_id = bench.name("fi" + bench.r)
    env = {
        **os.environ,
        "BENCH_BROKER": f"kafka://{bench.bootstrap}",
        "BENCH_APP_ID": app_id,
        "BENCH_TOPIC": data.topic,
        "BENCH_DATA_DIR": str(bench.work / "data" / f"faust{bench.r}"),
        "BENCH_WEB_PORT": str(free_port()),
        "BENCH_PARTITIONS": str(bench.partitions),
    }
    cmd = [sys.executable, "-m", "bench.contenders.apps.faust_idiomatic", "worker", "-l", "info"]
    return progress_contender(bench, out, cmd, env, app_id, data.topic, data.events)
