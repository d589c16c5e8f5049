"""Contenders: Quix Streams in a process of its own, the peers' count (apps/quix_count.py) and both login
detections (apps/quix_full.py)."""

from __future__ import annotations

import os
import sys

from bench.data import Dataset
from bench.harness import Bench, Outcome, progress_contender

QUIX_NAME = "Quix Streams (hopping window count)"
QUIX_FULL_NAME = "Quix Streams, both login detections (+ group_by user, account takeover)"


def quix_streams(bench: Bench, data: Dataset) -> Outcome:
    """Quix Streams: ``hopping_window(60 s, 10 s).count().current()``, RocksDB + changelog."""
    return _quix(bench, data, Outcome(QUIX_NAME), "quix_count", "qx")


def quix_full(bench: Bench, data: Dataset) -> Outcome:
    """Quix Streams: the count per IP and, through ``group_by("user")``, account takeover per user."""
    return _quix(bench, data, Outcome(QUIX_FULL_NAME), "quix_full", "qf", regrouped=True)


def _quix(
    bench: Bench, data: Dataset, out: Outcome, module: str, tag: str, regrouped: bool = False
) -> Outcome:
    try:
        import quixstreams

        out.detail["version"] = quixstreams.__version__
    except ImportError:
        return out.fail("quixstreams is not installed: pip install -e '.[bench]'")
    group = bench.name(tag + bench.r)
    env = {
        **os.environ,
        "BENCH_BROKER": bench.bootstrap,
        "BENCH_GROUP": group,
        "BENCH_TOPIC": data.topic,
        "BENCH_DATA_DIR": str(bench.work / "data" / f"{module}{bench.r}"),
    }

    def repartition_topics() -> list[str]:  # Quix names them repartition__<group>--...
        return [t for t in bench.broker.topics() if t.startswith(f"repartition__{group}--")]

    return progress_contender(
        bench,
        out,
        [sys.executable, "-m", f"bench.contenders.apps.{module}"],
        env,
        group,
        data.topic,
        data.events,
        label=module.replace("_count", ""),
        internal=repartition_topics if regrouped else None,
    )
