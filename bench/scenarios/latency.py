"""Scenario: event-to-alert latency at a paced rate, read by a process of its own."""

from __future__ import annotations

import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.contenders.streamapp_worker import PEERS_RULES
from bench.data import produce_paced
from bench.harness import EVENTS_METRIC, POLL, Bench, fmt, sample
from bench.procs import Proc, StreamappWorker

logger = logging.getLogger("bench")


@dataclass
class LatencyOutcome:
    """Event-to-alert latency at ``rate`` events/s."""

    status: str = "ok"
    reason: str = ""
    rate: float = 0.0
    achieved_rate: float | None = None
    seconds: float = 0.0
    attacks: int = 0
    alerts: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    worker_p50_ms: float | None = None  # crossing event -> the worker's producer takes the alert
    worker_p99_ms: float | None = None
    worst: str = ""  # the slowest alerts: when (s into the run), total and in-worker latency
    kept_up: str = ""
    rss_mb: float | None = None


#: the first seconds of the latency run's traffic are sent but not timed (the worker's start-up)
LATENCY_WARMUP_SECONDS = 5.0


def latency(bench: Bench, rate: float, seconds: float, rules: str = PEERS_RULES) -> LatencyOutcome:
    """Hold ``rate`` logins/s against a fresh worker with brute-force bursts; time each alert.

    Latency = the time the alert is read from ``alerts`` (by a reader process of its own) minus
    the produce time of the failed login that made the count cross the threshold (its ``ts``,
    which streamapp carries into the alert's ``ts``).
    """
    out = LatencyOutcome(rate=rate, seconds=seconds)
    tag = "lt" if rules == PEERS_RULES else "lf"
    prefix = bench.name(f"-{tag}-")
    app_id = bench.name(tag)
    topic = f"{prefix}logins"
    bench.broker.create_topic(topic, bench.partitions)
    worker = bench.worker(f"latency-{tag}", app_id, prefix, bench.work / "data" / tag, rules=rules)
    alerts_file = bench.work / f"latency-{tag}-alerts.jsonl"
    for stale in (alerts_file, alerts_file.with_name(alerts_file.name + ".ready")):
        stale.unlink(missing_ok=True)  # a reused --work-dir: the reader appends, and keys repeat
    reader = Proc(
        "alert-reader",
        [sys.executable, "-m", "bench.alert_reader", bench.bootstrap, f"{prefix}alerts", str(alerts_file)],
        dict(os.environ),
        bench.work / "logs" / f"alert-reader-{tag}.log",
    )
    try:
        worker.start_ready(120)
        reader.start()
        ready_file = alerts_file.with_name(alerts_file.name + ".ready")
        deadline = time.monotonic() + 60
        while not ready_file.exists():
            if not reader.alive() or time.monotonic() > deadline:
                out.status, out.reason = "failed", f"alert reader not reading: {reader.log_tail(5)}"
                return out
            time.sleep(POLL)
        logger.info(
            "latency: producing %s logins/s for %.0f s with 4 brute-force bursts per second",
            fmt(rate),
            seconds,
        )
        traffic = produce_paced(
            bench.bootstrap, topic, rate, seconds + LATENCY_WARMUP_SECONDS,
            stop=lambda: not worker.alive(), warmup=LATENCY_WARMUP_SECONDS,
        )  # fmt: skip
        attacks = traffic.attacks or {}
        out.attacks = len(attacks)
        out.achieved_rate = traffic.events / traffic.seconds if traffic.seconds else None
        latencies = _alert_latencies(alerts_file, attacks, worker, deadline=time.monotonic() + 30)
        out.alerts = len(latencies)
        started = min(attacks.values(), default=0.0)
        try:
            ingested = sample(worker.metrics(), EVENTS_METRIC, topic="logins")
            out.kept_up = (
                f"{fmt(ingested)} of {fmt(traffic.events)} logins ingested when the last alert was read"
            )
        except OSError:
            pass
        out.rss_mb = worker.rss_mb()
        if not latencies:
            out.status, out.reason = "failed", f"no alert read for {len(attacks)} bursts"
            return out
        ordered = sorted(total for _, total, _ in latencies)
        out.p50_ms = statistics.median(ordered) * 1000
        out.p99_ms = _p99(ordered) * 1000
        out.max_ms = ordered[-1] * 1000
        in_worker = sorted(worker for _, _, worker in latencies)
        out.worker_p50_ms = statistics.median(in_worker) * 1000
        out.worker_p99_ms = _p99(in_worker) * 1000
        out.worst = ", ".join(
            f"at {ts - started:.1f} s: {total * 1000:,.0f} ms ({worker * 1000:,.0f} in the worker)"
            for ts, total, worker in sorted(latencies, key=lambda x: -x[1])[:3]
        )
        if len(latencies) < len(attacks):
            out.status, out.reason = (
                "partial",
                f"{len(attacks) - len(latencies)} of {len(attacks)} bursts gave no alert",
            )
        return out
    finally:
        reader.stop()
        worker.stop()


def _p99(ordered: list[float]) -> float:
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def _alert_latencies(
    path: Path, attacks: dict[str, float], worker: StreamappWorker, deadline: float
) -> list[tuple[float, float, float]]:
    """(crossing ts, seconds to alert read, seconds to the worker producing the alert) per attack IP.

    Waits for missing ones until ``deadline``.
    """
    found: dict[str, tuple[float, float, float]] = {}
    while True:
        try:
            lines = path.read_bytes().splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines:
            alert = orjson.loads(line)
            if alert["kind"] == "brute_force" and alert["key"] in attacks and alert["key"] not in found:
                ts = float(alert["ts"])
                found[alert["key"]] = (ts, alert["recv"] - ts, alert["produced"] - ts)
        if len(found) >= len(attacks) or time.monotonic() > deadline or not worker.alive():
            return list(found.values())
        time.sleep(0.5)
