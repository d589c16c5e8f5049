"""Contender: a real ``streamapp worker`` running both login detections as the shipped specs."""

from __future__ import annotations

import logging

from bench.contenders.streamapp_spec import SPEC_RULES, apply_spec, disable_spec
from bench.contenders.streamapp_worker import login_detection_events, measure_worker
from bench.data import Dataset
from bench.harness import Bench, Metrics, Outcome, detections_progress, fmt, sample
from bench.procs import REPO

__all__ = ["SPEC_FULL_NAME", "SPEC_FULL_FILES", "streamapp_spec_full"]

logger = logging.getLogger("bench")

SPEC_FULL_NAME = "streamapp worker, both login detections as the shipped specs"
#: the shipped specs of the two login detections, as a user applies them (the streamapp-full row
#: runs the same specs as the worker's own: STREAMAPP_RULES)
SPEC_FULL_FILES = (REPO / "detections" / "brute_force.yaml", REPO / "detections" / "account_takeover.yaml")


def streamapp_spec_full(bench: Bench, data: Dataset, prefix: str) -> Outcome:
    """The quix-full workload on the spec engine: the two specs applied through the control topic,
    then a worker whose login ingest hands every login to them (brute force per IP takes the failed
    ones, account takeover per user every one), timed until every login is applied to its states."""
    out = Outcome(SPEC_FULL_NAME)
    tag = "se" + bench.r  # (sa, sf, sd: the other streamapp rows)
    app_id = bench.name(tag)
    worker = bench.worker(tag, app_id, prefix, bench.work / "data" / tag, rules=SPEC_RULES)
    log = bench.work / "logs" / f"{tag}-apply.log"
    for spec in SPEC_FULL_FILES:
        failed = apply_spec(worker.env, spec, log)
        if failed:
            return out.fail(failed)
    out.detail["specs"] = ", ".join(str(spec.relative_to(REPO)) for spec in SPEC_FULL_FILES)

    events = login_detection_events(data, ["brute_force", "account_takeover"])

    def progress(metrics: Metrics) -> tuple[float, float]:
        return detections_progress(metrics, events, data.topic)

    def alerts(metrics: Metrics) -> str:
        raised = [sample(metrics, "streamapp_detection_alerts_total", detection=name)
                  for name in ("brute_force", "account_takeover")]  # fmt: skip
        return f"{fmt(raised[0])} brute_force and {fmt(raised[1])} account_takeover by then"

    try:
        return measure_worker(bench, data, out, worker, app_id, progress, alerts)
    finally:
        # the control topic is the run's (see streamapp_spec)
        for name in ("brute_force", "account_takeover"):
            disabled = disable_spec(worker.env, name, log)
            if disabled:
                logger.warning("the spec %s stays applied: %s", name, disabled)
