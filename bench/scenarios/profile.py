"""Scenario: a second streamapp pass under py-spy; where the time goes."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.contenders.streamapp_worker import PEERS_RULES
from bench.data import Dataset
from bench.harness import EVENTS_METRIC, Bench, Outcome, sample

logger = logging.getLogger("bench")


@dataclass
class ProfileOutcome:
    """py-spy samples of a streamapp worker during a throughput pass: own time per function."""

    status: str = "ok"
    reason: str = ""
    samples: int = 0
    seconds: float = 0.0
    top: list[tuple[str, int, int]] = field(default_factory=list)  # (function, own, inclusive samples)
    stages: list[tuple[str, int]] = field(default_factory=list)  # (stage, inclusive samples)
    folded: Path | None = None


def profile(bench: Bench, data: Dataset, prefix: str, seconds: float, top: int = 15) -> ProfileOutcome:
    """A second streamapp pass (fresh app id, same data) with py-spy attached for ``seconds``."""
    out = ProfileOutcome(seconds=seconds)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        out.status, out.reason = "failed", "py-spy is not installed: pip install -e '.[bench]'"
        return out
    worker = bench.worker(
        "profile-streamapp", bench.name("pf"), prefix, bench.work / "data" / "profile", rules=PEERS_RULES
    )
    try:
        worker.start_ready(120)
        deadline = time.monotonic() + 60
        while sample(worker.metrics(), EVENTS_METRIC, topic="logins") == 0:
            if time.monotonic() > deadline:
                out.status, out.reason = "failed", "the worker processed nothing"
                return out
            time.sleep(0.05)
        folded = bench.work / "profile.folded"
        logger.info("profile: py-spy on pid %d for %.0f s", worker.pid, seconds)
        cmd = [py_spy, "record", "--pid", str(worker.pid), "--rate", "100", "--format", "raw",
               "--output", str(folded), "--duration", str(max(1, int(seconds)))]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
        if proc.returncode != 0 or not folded.exists():
            out.status, out.reason = (
                "failed",
                f"py-spy exit {proc.returncode}: {(proc.stderr or proc.stdout)[-300:]}",
            )
            return out
        out.folded = folded
        out.samples, out.top = top_functions(folded, top)
        out.stages = stage_samples(folded)
        return out
    finally:
        worker.stop()


def top_functions(folded: Path, top: int) -> tuple[int, list[tuple[str, int, int]]]:
    """(total samples, [(function, own samples, inclusive samples)]) from py-spy's raw (folded) stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [_function(frame) for frame in stack.split(";")]
        frames = [f for f in frames if f]
        if not frames:
            continue
        own[frames[-1]] += samples
        for name in set(frames):
            inclusive[name] += samples
    return total, [(name, n, inclusive[name]) for name, n in own.most_common(top)]


#: (stage, substrings of frames that put a sample in it): a sample counts once per stage
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("idle: an event loop waiting in select() (main or consumer thread)", ("EpollSelector.select",)),
    (
        "ingest handler (streamapp.pipeline.ingest.route_batch), all it calls",
        ("route_batch (streamapp/pipeline/ingest.py",),
    ),
    (
        "detections (agents/run_detections.py: hand-over and engine), all they call",
        ("agents/run_detections.py",),
    ),
    (
        "JSON decode and validation (parse_valid_json, decode_or_dead_letter)",
        ("parse_valid_json", "decode_or_dead_letter"),
    ),
    ("rules (streamapp/rules/)", ("streamapp/rules/",)),
    ("table reads and writes (load_state, store_state; RocksDB)", ("load_state", "store_state")),
    (
        "producing: record batches, the sender task, aiokafka's producer",
        ("RecordBatches.", "BatchSender.", "aiokafka/producer/"),
    ),
    ("aiokafka fetch: parsing fetched records", ("aiokafka/consumer/fetcher.py",)),
    ("faust's per-record stream iteration (topics without a batch handler)", ("Stream._c_aiter",)),
    ("expiry sweep (expire_keys)", ("expire_keys",)),
    ("socket writes", ("_SelectorSocketTransport.write",)),
    ("Prometheus: faust sensors and streamapp metrics", ("faust/sensors/", "prometheus_client/")),
    ("offset commits", ("Consumer.commit", "Consumer._commit")),
]


def stage_samples(folded: Path) -> list[tuple[str, int]]:
    """Inclusive samples per pipeline stage (:data:`STAGES`)."""
    counts = [0] * len(STAGES)
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        for i, (_, needles) in enumerate(STAGES):
            if any(needle in stack for needle in needles):
                counts[i] += int(count)
    return [(label, n) for (label, _), n in zip(STAGES, counts, strict=True)]


def aggregate_folded(folded: Path, target: Path) -> int:
    """Write ``folded`` with one frame per function (line numbers dropped, stacks merged from the
    event loop up); the number of distinct stacks written."""
    stacks: Counter[str] = Counter()
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            frames = [f for f in (_function(frame) for frame in stack.split(";")) if f]
            # start at the event loop: the frames below it (runpy, click, mode's worker) are the same always
            loop = [i for i, f in enumerate(frames) if f.startswith("BaseEventLoop._run_once")]
            stacks[";".join(frames[loop[-1] :] if loop else frames)] += int(count)
    target.write_text("".join(f"{stack} {n}\n" for stack, n in sorted(stacks.items())))
    return len(stacks)


def _function(frame: str) -> str:
    """``func (path/to/module.py:123)`` -> ``func (to/module.py)``: one entry per function, not per line."""
    frame = frame.strip()
    if frame.startswith("process ") or frame.startswith("thread "):
        return ""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0] if ":" in where else where
    for marker in ("site-packages/", "lib/python3.11/", str(Path(__file__).resolve().parent.parent) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})" if path else name


Runner = Callable[[], Outcome]
