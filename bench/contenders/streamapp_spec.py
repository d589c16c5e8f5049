"""Contender: a real ``streamapp worker`` running brute force as a detection spec (bench/specs/)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from bench.contenders.streamapp_worker import login_detection_events, measure_worker
from bench.data import Dataset
from bench.harness import Bench, Metrics, Outcome, detections_progress, fmt, sample
from bench.procs import REPO

__all__ = ["SPEC_ENGINE_NAME", "SPEC_FILE", "SPEC_RULES", "apply_spec", "disable_spec", "streamapp_spec"]

logger = logging.getLogger("bench")

SPEC_ENGINE_NAME = "streamapp worker, spec engine (brute force per IP as a detection spec)"
#: the spec: failed logins per IP in a sliding 60-s window, more than BRUTE_FORCE_THRESHOLD
SPEC_FILE = REPO / "bench" / "specs" / "brute_force.yaml"
#: no shipped detection of the worker's own: its login ingest only validates (as in the streamapp
#: row) and the applied spec does all the detecting
SPEC_RULES = "none"


def streamapp_spec(bench: Bench, data: Dataset, prefix: str) -> Outcome:
    """The spec applied through the control topic (``streamapp detections apply``), then a worker
    (whose login ingest hands the logins to the spec), timed until every failed login is applied to
    its key's state in ``detection-state`` (the engine's where keeps only failed logins)."""
    out = Outcome(SPEC_ENGINE_NAME)
    tag = "sd" + bench.r
    app_id = bench.name(tag)
    worker = bench.worker(tag, app_id, prefix, bench.work / "data" / tag, rules=SPEC_RULES)
    log = bench.work / "logs" / f"{tag}-apply.log"
    applied = _detections(worker.env, log, "apply", str(SPEC_FILE))
    if applied:
        return out.fail(applied)
    out.detail["spec"] = str(SPEC_FILE.relative_to(REPO))

    events = login_detection_events(data, ["brute_force"])

    def progress(metrics: Metrics) -> tuple[float, float]:
        return detections_progress(metrics, events, data.topic)

    def alerts(metrics: Metrics) -> str:
        raised = sample(metrics, "streamapp_detection_alerts_total", detection="brute_force")
        return f"{fmt(raised)} brute_force by then (the last grace's come later)"

    try:
        return measure_worker(bench, data, out, worker, app_id, progress, alerts)
    finally:
        # the control topic is the run's (its topic prefix): every later worker of the run would
        # load the spec, subscribe to logins and run it beside what it measures
        disabled = _detections(worker.env, log, "disable", "brute_force")
        if disabled:
            logger.warning("the spec row's detection stays applied: %s", disabled)


def apply_spec(env: dict[str, str], spec: Path, log: Path) -> str | None:
    """``streamapp detections apply`` as a user runs it, with the worker's settings; why it failed or None."""
    return _detections(env, log, "apply", str(spec))


def disable_spec(env: dict[str, str], name: str, log: Path) -> str | None:
    """``streamapp detections disable NAME``; why it failed or None."""
    return _detections(env, log, "disable", name)


def _detections(env: dict[str, str], log: Path, *args: str) -> str | None:
    proc = subprocess.run(
        [sys.executable, "-m", "streamapp.cli", "detections", *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"$ streamapp detections {' '.join(args)}\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        return f"detections {args[0]} exited with {proc.returncode}: {(proc.stderr or proc.stdout)[-300:]}"
    return None
