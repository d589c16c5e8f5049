"""Contender: a real ``streamapp worker`` on the peers' workload (STREAMAPP_RULES=brute_force)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from bench.data import Dataset
from bench.harness import (
    POLL,
    REPORT_EVERY,
    Bench,
    Metrics,
    Outcome,
    cpu_pct,
    detections_progress,
    fmt,
    group_topics,
    sample,
    wait_committed,
)
from bench.procs import StreamappWorker

logger = logging.getLogger("bench")

#: the peers' workload: failed logins counted per IP (STREAMAPP_RULES=brute_force)
PEERS_RULES = "brute_force"
#: the whole login pipeline: every login also to account takeover per user
FULL_RULES = "brute_force,account_takeover"
STREAMAPP_NAME = "streamapp worker (brute force per IP)"
STREAMAPP_FULL_NAME = "streamapp worker, both login rules (+ account takeover per user)"


def streamapp_pipeline(bench: Bench, data: Dataset, prefix: str, rules: str = PEERS_RULES) -> Outcome:
    """A real ``streamapp worker`` on the pre-produced topic (``<prefix>logins``), fresh app id and state.

    The worker runs the shipped detections ``rules`` as their specs (detections/), as a worker
    does by default. Timed from the first event seen on ``/metrics`` until every login is ingested
    and every detection has applied each login its ``where`` keeps (:func:`login_detection_events`).
    With ``rules`` = "brute_force" (the peers' workload) that is validation and the failed-login
    count per IP in ``detection-state`` (RocksDB with its changelog), alerts out; with
    "brute_force,account_takeover" every login also goes to the account-takeover state per user.
    """
    full = rules == FULL_RULES
    tag = ("sf" if full else "sa") + bench.r
    app_id = bench.name(tag)
    worker = bench.worker(tag, app_id, prefix, bench.work / "data" / tag, rules=rules)
    out = Outcome(STREAMAPP_FULL_NAME if full else STREAMAPP_NAME)
    events = login_detection_events(data, rules.split(","))

    def progress(metrics: Metrics) -> tuple[float, float]:
        return detections_progress(metrics, events, data.topic)

    return measure_worker(bench, data, out, worker, app_id, progress, _rule_alerts)


def login_detection_events(data: Dataset, detections: Iterable[str]) -> dict[str, int]:
    """How many of the dataset's logins each login detection applies (its spec's ``where``): brute
    force the failed ones, account takeover every one."""
    applied = {"brute_force": data.failures, "account_takeover": data.events}
    return {name: applied[name] for name in detections}


def _rule_alerts(metrics: Metrics) -> str:
    return (
        fmt(sample(metrics, "streamapp_alerts_total", kind="brute_force"))
        + " brute_force, "
        + fmt(sample(metrics, "streamapp_alerts_total", kind="account_takeover"))
        + " account_takeover"
    )


def measure_worker(
    bench: Bench,
    data: Dataset,
    out: Outcome,
    worker: StreamappWorker,
    app_id: str,
    progress: Callable[[Metrics], tuple[float, float]],
    alerts: Callable[[Metrics], str],
) -> Outcome:
    """Start ``worker`` and time it from the first login ingested until ``progress`` (logins
    ingested, work still pending) says every login is ingested and nothing is pending."""
    try:
        ready = worker.start_ready(120)
        out.detail["ready after start"] = f"{ready:.1f} s"
        n = data.events
        deadline = time.monotonic() + bench.timeout(n)
        t0: float | None = None
        c0 = 0.0
        cpu0: tuple[float, float | None] | None = None
        ingested = pending = 0.0
        ingest_done: float | None = None
        next_report = time.monotonic() + REPORT_EVERY
        while True:
            if not worker.alive():
                return out.fail(f"worker exited with {worker.returncode()}: {worker.log_tail(5)}")
            try:
                metrics = worker.metrics()
            except OSError:
                time.sleep(POLL)
                continue
            now = time.time()
            ingested, pending = progress(metrics)
            if t0 is None and ingested > 0:
                t0, c0, cpu0 = now, ingested, (now, worker.cpu_seconds())
            if ingest_done is None and ingested >= n:
                ingest_done = now
            if ingested >= n and pending == 0:
                break
            if time.monotonic() > deadline:
                out.status, out.reason = "partial", f"timed out: {fmt(ingested)} of {fmt(n)} ingested"
                break
            if time.monotonic() >= next_report:
                rate = (ingested - c0) / (now - t0) if t0 and now > t0 else 0.0
                logger.info(
                    "streamapp: %s/%s logins ingested (%s/s), %s records in the pipeline",
                    fmt(ingested), fmt(n), fmt(rate), fmt(pending),
                )  # fmt: skip
                next_report += REPORT_EVERY
            time.sleep(POLL)
        out.rss_mb = worker.rss_mb()
        out.cpu_pct = cpu_pct(cpu0, worker)
        if t0 is None:
            return out.fail("no event was processed")
        end = now
        out.events = int(ingested - c0) if out.status == "partial" else int(n - c0)
        out.seconds = end - t0
        out.rate = out.events / out.seconds if out.seconds > 0 else None
        if ingest_done is not None:
            out.detail["ingest only (route_logins)"] = (
                f"{(n - c0) / max(ingest_done - t0, 1e-9):,.0f} events/s"
            )
        out.detail["alerts"] = alerts(metrics)
        if out.status == "ok":
            committed = wait_committed(bench, app_id, group_topics(bench, app_id, data.topic), 60)
            if committed is not None:
                out.committed_seconds = committed - t0
        return out
    finally:
        worker.stop()
