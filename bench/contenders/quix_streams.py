"""Contender: Quix Streams' hopping-window count in a process of its own (apps/quix_count.py)."""

from __future__ import annotations

import os
import sys

from bench.data import Dataset
from bench.harness import Bench, Outcome, progress_contender


def quix_streams(bench: Bench, data: Dataset) -> Outcome:
    """Quix Streams: ``hopping_window(60 s, 10 s).count().current()``, RocksDB + changelog."""
    out = Outcome("Quix Streams (hopping window count)")
    try:
        import quixstreams

        out.detail["version"] = quixstreams.__version__
    except ImportError:
        return out.fail("quixstreams is not installed: pip install -e '.[bench]'")
    group = bench.name("qx" + bench.r)
    env = {
        **os.environ,
        "BENCH_BROKER": bench.bootstrap,
        "BENCH_GROUP": group,
        "BENCH_TOPIC": data.topic,
        "BENCH_DATA_DIR": str(bench.work / "data" / f"quix{bench.r}"),
    }
    return progress_contender(
        bench,
        out,
        [sys.executable, "-m", "bench.contenders.apps.quix_count"],
        env,
        group,
        data.topic,
        data.events,
    )
