"""The measurements: five throughput contenders, alert latency, changelog recovery, restart, profile."""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka.partitioner import murmur2
from confluent_kafka import Consumer, TopicPartition

from bench.data import Dataset, distinct_ip, fill_events, make_producer, produce, produce_paced
from bench.kafka_util import Broker
from bench.procs import Proc, StreamappWorker, free_port
from bench.progress import read_progress
from streamapp.dev.kafka import fetch_kafka_jars

__all__ = [
    "FULL_RULES",
    "LATENCY_WARMUP_SECONDS",
    "PEERS_RULES",
    "STREAMAPP_FULL_NAME",
    "STREAMAPP_NAME",
    "Bench",
    "LatencyOutcome",
    "Outcome",
    "ProfileOutcome",
    "RecoveryOutcome",
    "aggregate_folded",
    "consumer_performance",
    "faust_idiomatic",
    "latency",
    "profile",
    "quix_streams",
    "raw_aiokafka",
    "recovery",
    "streamapp_pipeline",
]

logger = logging.getLogger("bench")

_EVENTS = "streamapp_events_total"
_POLL = 0.2  # seconds between looks at a contender's progress
_REPORT_EVERY = 5.0  # seconds between progress lines in the log


@dataclass
class Bench:
    """One bench run: its unique tag, broker, work directory and time limits."""

    tag: str
    broker: Broker
    work: Path
    partitions: int = 8
    timeout_scale: float = 1.0
    round: int = 1  # throughput round: its contenders get names and directories of their own

    @property
    def r(self) -> str:
        """Suffix of names and files of the current throughput round ("" in the first)."""
        return "" if self.round == 1 else f"r{self.round}"

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def name(self, suffix: str) -> str:
        """A name unique to this run (app ids, groups, topic prefixes all start with ``bench<tag>``)."""
        return f"bench{self.tag}{suffix}"

    def timeout(self, events: int, floor_rate: float = 400.0) -> float:
        """Seconds a contender gets for ``events``: a minute plus ``floor_rate`` events/s."""
        return (60.0 + events / floor_rate) * self.timeout_scale

    def worker(
        self,
        label: str,
        app_id: str,
        prefix: str,
        data_dir: Path,
        port: int | None = None,
        rules: str = "all",
    ) -> StreamappWorker:
        port = port or free_port()
        env = {
            "STREAMAPP_RULES": rules,
            **os.environ,
            "STREAMAPP_BROKER": f"kafka://{self.bootstrap}",
            "STREAMAPP_APP_ID": app_id,
            "STREAMAPP_TOPIC_PREFIX": prefix,
            "STREAMAPP_DATA_DIR": str(data_dir),
            "STREAMAPP_WEB_PORT": str(port),
            "STREAMAPP_PARTITIONS": str(self.partitions),
        }
        return StreamappWorker(label, env, self.work / "logs" / f"{label}.log", port)


@dataclass
class Outcome:
    """A throughput figure: ``rate`` events/s over ``events`` events in ``seconds``, or why there is none."""

    name: str
    status: str = "ok"  # ok | partial (timed out; rate over what it did) | failed
    reason: str = ""
    events: int = 0
    seconds: float | None = None
    rate: float | None = None
    committed_seconds: float | None = None  # first event -> the group's committed offsets reach the end
    rss_mb: float | None = None
    cpu_pct: float | None = None  # CPU time / wall time while it processed (100 = one core busy)
    ratio: float | None = None  # rate / streamapp's rate (median over rounds of the ratio in each)
    rounds: list[float | None] = field(default_factory=list)  # the rate of each round
    detail: dict[str, str] = field(default_factory=dict)

    def fail(self, reason: str) -> Outcome:
        self.status, self.reason = "failed", reason
        return self


def _fmt(n: float) -> str:
    return f"{n:,.0f}"


def _cpu_pct(start: tuple[float, float | None] | None, proc: Proc) -> float | None:
    """Percent of one core ``proc`` used since ``start`` = (time.time(), its CPU seconds then)."""
    now, cpu = time.time(), proc.cpu_seconds()
    if start is None or start[1] is None or cpu is None or now - start[0] < 0.5:
        return None  # too short a window to say
    return 100 * (cpu - start[1]) / (now - start[0])


def _wait_committed(bench: Bench, group: str, topics: list[str], timeout: float) -> float | None:
    """Poll until ``group`` has committed every record of ``topics``; time.time() then, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if bench.broker.lag(group, topics) == 0:
                return time.time()
        except Exception as exc:  # the broker is shared and busy: one failed look is not the end
            logger.debug("lag of %s: %s", group, exc)
        time.sleep(_POLL)
    return None


# -- 1. streamapp ---------------------------------------------------------------------------------
Metrics = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def _by_topic(metrics: Metrics, name: str) -> dict[str, float]:
    return {dict(labels).get("topic", ""): v for (n, labels), v in metrics.items() if n == name}


def pipeline_progress(metrics: Metrics) -> tuple[float, float]:
    """(logins ingested, records still in the worker's pipeline) from a worker's ``/metrics``.

    In the pipeline: records the worker sent to a topic it also reads (its by-entity topics) but
    has not received yet, plus messages received and not yet acknowledged (``faust_active_messages``).
    Both 0 once every agent downstream of ``logins`` has handled everything, whatever the topology.
    """
    ingested = _sample(metrics, _EVENTS, topic="logins")
    sent = _by_topic(metrics, "faust_topic_messages_sent_total")
    received = _by_topic(metrics, "faust_messages_received_per_topic_total")
    in_flight = sum(max(0.0, n - received[topic]) for topic, n in sent.items() if topic in received)
    return ingested, in_flight + max(0.0, _sample(metrics, "faust_active_messages"))


def _group_topics(bench: Bench, app_id: str, source: str) -> list[str]:
    """The source topic and the app's internal topics it reads (not its changelogs)."""
    internal = [
        t for t in bench.broker.topics()
        if t.startswith(f"{app_id}-") and not t.endswith("-changelog") and "__assignor" not in t
    ]  # fmt: skip
    return [source, *sorted(internal)]


#: the peers' workload: failed logins counted per IP (STREAMAPP_RULES=brute_force)
PEERS_RULES = "brute_force"
#: the whole login pipeline: every login also re-keyed by user for account takeover
FULL_RULES = "brute_force,account_takeover"
STREAMAPP_NAME = "streamapp worker (brute force per IP)"
STREAMAPP_FULL_NAME = "streamapp worker, both login rules (+ account takeover per user)"


def streamapp_pipeline(bench: Bench, data: Dataset, prefix: str, rules: str = PEERS_RULES) -> Outcome:
    """A real ``streamapp worker`` on the pre-produced topic (``<prefix>logins``), fresh app id and state.

    Timed from the first event seen on ``/metrics`` until every login is ingested and every agent
    downstream has handled every record the ingest agent forwarded. With ``rules`` =
    "brute_force" (the peers' workload) that is validation and the failed-login count per IP
    in RocksDB with its changelog, alerts out; with "brute_force,account_takeover" every login
    also goes through ``logins-by-user`` to the account-takeover state per user.
    """
    full = rules == FULL_RULES
    out = Outcome(STREAMAPP_FULL_NAME if full else STREAMAPP_NAME)
    tag = ("sf" if full else "sa") + bench.r
    app_id = bench.name(tag)
    worker = bench.worker(tag, app_id, prefix, bench.work / "data" / tag, rules=rules)
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
        next_report = time.monotonic() + _REPORT_EVERY
        while True:
            if not worker.alive():
                return out.fail(f"worker exited with {worker.returncode()}: {worker.log_tail(5)}")
            try:
                metrics = worker.metrics()
            except OSError:
                time.sleep(_POLL)
                continue
            now = time.time()
            ingested, pending = pipeline_progress(metrics)
            if t0 is None and ingested > 0:
                t0, c0, cpu0 = now, ingested, (now, worker.cpu_seconds())
            if ingest_done is None and ingested >= n:
                ingest_done = now
            if ingested >= n and pending == 0:
                break
            if time.monotonic() > deadline:
                out.status, out.reason = "partial", f"timed out: {_fmt(ingested)} of {_fmt(n)} ingested"
                break
            if time.monotonic() >= next_report:
                rate = (ingested - c0) / (now - t0) if t0 and now > t0 else 0.0
                logger.info(
                    "streamapp: %s/%s logins ingested (%s/s), %s records in the pipeline",
                    _fmt(ingested), _fmt(n), _fmt(rate), _fmt(pending),
                )  # fmt: skip
                next_report += _REPORT_EVERY
            time.sleep(_POLL)
        out.rss_mb = worker.rss_mb()
        out.cpu_pct = _cpu_pct(cpu0, worker)
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
        out.detail["alerts"] = (
            _fmt(_sample(metrics, "streamapp_alerts_total", kind="brute_force"))
            + " brute_force, "
            + _fmt(_sample(metrics, "streamapp_alerts_total", kind="account_takeover"))
            + " account_takeover"
        )
        if out.status == "ok":
            committed = _wait_committed(bench, app_id, _group_topics(bench, app_id, data.topic), 60)
            if committed is not None:
                out.committed_seconds = committed - t0
        return out
    finally:
        worker.stop()


# -- 2.-4. contenders that write a progress file ----------------------------------------------------
def _progress_contender(
    bench: Bench, out: Outcome, cmd: list[str], env: dict[str, str], group: str, topic: str, expect: int
) -> Outcome:
    """Run a contender process that keeps a progress file; rate from its first to its last event."""
    label = out.name.split()[0].lower()
    progress_path = bench.work / f"{label}{bench.r}-progress.json"
    env = {**env, "BENCH_PROGRESS": str(progress_path), "BENCH_EXPECT": str(expect)}
    proc = Proc(label, cmd, env, bench.work / "logs" / f"{label}{bench.r}.log")
    proc.start()
    try:
        deadline = time.monotonic() + 90 * bench.timeout_scale + bench.timeout(expect)
        next_report = time.monotonic() + _REPORT_EVERY
        rss: float | None = None
        cpu0: tuple[float, float | None] | None = None
        starts = 1
        while True:
            progress = read_progress(progress_path)
            if cpu0 is None and progress.first is not None:
                cpu0 = (time.time(), proc.cpu_seconds())
            if progress.done:
                break
            rss = proc.rss_mb() or rss
            if not proc.alive() and progress.count == 0 and starts < 3 and proc.returncode():
                logger.warning("%s: exited before any event, starting it again: %s", label, proc.log_tail(3))
                starts += 1
                proc.start()
                continue
            if not proc.alive():
                return out.fail(
                    f"exited with {proc.returncode()} after {_fmt(progress.count)} events: {proc.log_tail(5)}"
                )
            if time.monotonic() > deadline:
                out.status, out.reason = (
                    "partial",
                    f"timed out: {_fmt(progress.count)} of {_fmt(expect)} events",
                )
                break
            if time.monotonic() >= next_report:
                logger.info(
                    "%s: %s/%s events (%s/s)",
                    label,
                    _fmt(progress.count),
                    _fmt(expect),
                    _fmt(progress.rate() or 0),
                )
                next_report += _REPORT_EVERY
            time.sleep(_POLL)
        out.rss_mb = proc.rss_mb() or rss
        out.cpu_pct = _cpu_pct(cpu0, proc)
        if progress.first is None or progress.last is None or progress.rate() is None:
            return out.fail(f"no events processed ({progress.count})")
        out.events = progress.count - progress.first_count
        out.seconds = progress.last - progress.first
        out.rate = progress.rate()
        if out.status == "ok":
            committed = _wait_committed(bench, group, [topic], 60)
            if committed is not None:
                out.committed_seconds = committed - progress.first
        return out
    finally:
        proc.stop()


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
    cmd = [sys.executable, "-m", "bench.faust_idiomatic", "worker", "-l", "info"]
    return _progress_contender(bench, out, cmd, env, app_id, data.topic, data.events)


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
    return _progress_contender(
        bench, out, [sys.executable, "-m", "bench.quix_count"], env, group, data.topic, data.events
    )


def raw_aiokafka(bench: Bench, data: Dataset) -> Outcome:
    """aiokafka ``getmany`` + orjson decode + a dict of failed logins per IP: the Python client's ceiling."""
    out = Outcome("raw aiokafka + orjson loop")
    group = bench.name("raw" + bench.r)
    env = {**os.environ, "BENCH_BROKER": bench.bootstrap, "BENCH_GROUP": group, "BENCH_TOPIC": data.topic}
    return _progress_contender(
        bench, out, [sys.executable, "-m", "bench.raw_consume"], env, group, data.topic, data.events
    )


# -- 5. Kafka's ConsumerPerformance ------------------------------------------------------------------
def consumer_performance(bench: Bench, data: Dataset) -> Outcome:
    """``org.apache.kafka.tools.ConsumerPerformance`` on the same topic: the broker's ceiling here."""
    out = Outcome("Kafka ConsumerPerformance (Java)")
    libs = fetch_kafka_jars()
    log4j = bench.work / "tools-log4j2.properties"
    log4j.write_text(
        "status = warn\nappender.err.type = Console\nappender.err.name = ERR\n"
        "appender.err.target = SYSTEM_ERR\n"
        "appender.err.layout.type = PatternLayout\nappender.err.layout.pattern = %p %m%n\n"
        "rootLogger.level = warn\nrootLogger.appenderRef.err.ref = ERR\n"
    )
    cmd = [
        "java", "-Xmx512m", f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*",
        "org.apache.kafka.tools.ConsumerPerformance", "--bootstrap-server", bench.bootstrap,
        "--topic", data.topic, "--num-records", str(data.events), "--group", bench.name("cp" + bench.r),
        "--timeout", "60000",
    ]  # fmt: skip
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=bench.timeout(data.events, 5000), check=False
        )
    except subprocess.TimeoutExpired:
        return out.fail("timed out")
    (bench.work / "logs" / f"consumer-performance{bench.r}.log").write_text(proc.stdout + proc.stderr)
    rows = [r for r in csv.reader(io.StringIO(proc.stdout)) if r]
    if proc.returncode != 0 or len(rows) < 2:
        return out.fail(f"exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-300:]}")
    row = dict(zip([h.strip() for h in rows[0]], [v.strip() for v in rows[-1]], strict=False))
    try:
        out.events = int(row["data.consumed.in.nMsg"])
        out.seconds = float(row["fetch.time.ms"]) / 1000
        out.rate = float(row["fetch.nMsg.sec"])
        out.detail["MB/s"] = row["fetch.MB.sec"]
        out.detail["group join"] = f"{float(row['rebalance.time.ms']) / 1000:.1f} s (not counted)"
    except (KeyError, ValueError) as exc:
        return out.fail(f"unexpected output {rows[-2:]}: {exc}")
    return out


# -- latency -------------------------------------------------------------------------------------
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
            time.sleep(_POLL)
        logger.info(
            "latency: producing %s logins/s for %.0f s with 4 brute-force bursts per second",
            _fmt(rate),
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
            ingested = _sample(worker.metrics(), _EVENTS, topic="logins")
            out.kept_up = (
                f"{_fmt(ingested)} of {_fmt(traffic.events)} logins ingested when the last alert was read"
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


# -- recovery and restart ------------------------------------------------------------------------
@dataclass
class RecoveryOutcome:
    """Changelog recovery into an empty data dir, and ready time after a restart with local state."""

    status: str = "ok"
    reason: str = ""
    keys: int = 0
    seeded: int = 0  # keys the worker wrote itself
    appended: int = 0  # keys appended to the changelog as copies of the worker's records
    fill_rate: float | None = None
    changelog_records: int = 0
    changelogs: dict[str, int] = field(default_factory=dict)
    empty_ready_s: float | None = None  # a worker with nothing to recover: start-up alone
    recovery_ready_s: float | None = None
    records_per_s: float | None = None
    records_per_s_net: float | None = None  # start-up (empty_ready_s) taken off
    recovered_rss_mb: float | None = None
    stop_s: float | None = None
    restart_ready_s: float | None = None
    check: str = ""


def recovery(bench: Bench, keys: int, seed_keys: int = 10_000) -> RecoveryOutcome:
    """Fill the failed-logins-by-ip table with ``keys`` IPs, then rebuild it in an empty data dir.

    The first ``seed_keys`` IPs go through a real worker (one failed login each, so they are also
    one user each); the others are appended to the table's changelog directly, each a copy of a
    record the worker wrote, under its own key, in the partition the worker would have used.
    Filling a million keys through the worker would take longer than the rest of the bench.
    """
    out = RecoveryOutcome(keys=keys)
    prefix = bench.name("-rec-")
    app_id = bench.name("rc")
    topic = f"{prefix}logins"
    seeded = min(keys, seed_keys)
    bench.broker.create_topic(topic, bench.partitions)
    produce(bench.bootstrap, topic, fill_events(seeded), f"recovery seed ({_fmt(seeded)} distinct IPs)")
    filler = bench.worker("recovery-fill", app_id, prefix, bench.work / "data" / "recovery-fill")
    try:
        out.empty_ready_s = filler.start_ready(120)
        deadline = time.monotonic() + bench.timeout(seeded, 100)
        t0: float | None = None
        next_report = time.monotonic() + _REPORT_EVERY
        while True:
            if not filler.alive():
                out.status, out.reason = "failed", f"fill worker exited: {filler.log_tail(5)}"
                return out
            try:
                metrics = filler.metrics()
            except OSError:
                time.sleep(_POLL)
                continue
            ingested, pending = pipeline_progress(metrics)
            now = time.time()
            if t0 is None and ingested > 0:
                t0 = now
            if ingested >= seeded and pending == 0:
                out.fill_rate = seeded / (now - t0) if t0 and now > t0 else None
                break
            if time.monotonic() > deadline:
                out.status, out.reason = (
                    "failed",
                    f"fill timed out at {_fmt(ingested)} of {_fmt(seeded)} logins",
                )
                return out
            if time.monotonic() >= next_report:
                logger.info(
                    "recovery: seeding, %s/%s logins ingested, %s in the pipeline",
                    _fmt(ingested), _fmt(seeded), _fmt(pending),
                )  # fmt: skip
                next_report += _REPORT_EVERY
            time.sleep(_POLL)
        if _wait_committed(bench, app_id, _group_topics(bench, app_id, topic), 120) is None:
            logger.warning("recovery: the fill worker's offsets are not all committed")
    finally:
        filler.stop()
    out.seeded = seeded
    if keys > seeded:
        out.appended = append_to_changelog(bench, f"{app_id}-failed-logins-by-ip-changelog", seeded, keys)
    for name in sorted(bench.broker.topics()):
        if name.startswith(f"{app_id}-") and name.endswith("-changelog"):
            records = bench.broker.records(name)
            if records:
                out.changelogs[name.removeprefix(f"{app_id}-")] = records
    out.changelog_records = sum(out.changelogs.values())
    logger.info(
        "recovery: %s changelog records to rebuild from: %s", _fmt(out.changelog_records), out.changelogs
    )

    data_dir = bench.work / "data" / "recovery"
    port = free_port()
    recovering = bench.worker("recovery", app_id, prefix, data_dir, port)
    try:
        out.recovery_ready_s = recovering.start_ready(bench.timeout(out.changelog_records, 500))
        out.records_per_s = out.changelog_records / out.recovery_ready_s
        if out.empty_ready_s is not None and out.recovery_ready_s > out.empty_ready_s:
            out.records_per_s_net = out.changelog_records / (out.recovery_ready_s - out.empty_ready_s)
        out.recovered_rss_mb = recovering.rss_mb()
        logger.info(
            "recovery: ready after %.1f s (%s records/s)", out.recovery_ready_s, _fmt(out.records_per_s)
        )
        out.check = _check_ips(recovering, [distinct_ip(0), distinct_ip(keys // 2), distinct_ip(keys - 1)])
        out.stop_s = recovering.stop(60)
        restarted = bench.worker("restart", app_id, prefix, data_dir, port)
        try:
            out.restart_ready_s = restarted.start_ready(120, keep_state=True)
            logger.info("restart with local state: ready after %.1f s", out.restart_ready_s)
            after = _check_ips(restarted, [distinct_ip(keys - 1)])
            out.check += f"; after restart: {after}"
        finally:
            restarted.stop()
    finally:
        recovering.stop()
    return out


def append_to_changelog(bench: Bench, changelog: str, first: int, end: int) -> int:
    """Append keys ``distinct_ip(first .. end - 1)`` to ``changelog``, each with a value the worker wrote.

    The partition is the one the worker uses for the key: murmur2 of the raw key bytes, as the
    by-entity topic that feeds the table is partitioned (the default partitioner of aiokafka/Java).
    """
    sample_key, sample_value, sample_partition = read_one(bench, changelog)
    partitions = bench.broker.partitions(changelog)
    if _partition_of(sample_key, len(partitions)) != sample_partition:
        raise RuntimeError(f"{changelog}: the worker's partitioning is not murmur2 of the key; cannot append")
    producer = make_producer(bench.bootstrap)
    started = time.monotonic()
    for i in range(first, end):
        key = distinct_ip(i).encode()
        while True:
            try:
                producer.produce(
                    changelog, value=sample_value, key=key, partition=_partition_of(key, len(partitions))
                )
                break
            except BufferError:
                producer.poll(0.05)
        if i % 200_000 == 0:
            producer.poll(0)
    if producer.flush(120):
        raise RuntimeError(f"appending to {changelog}: records not delivered")
    logger.info(
        "recovery: appended %s keys to %s in %.1f s (a copy of the worker's value for %s)",
        _fmt(end - first), changelog, time.monotonic() - started, sample_key.decode(),
    )  # fmt: skip
    return end - first


def _partition_of(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def read_one(bench: Bench, topic: str) -> tuple[bytes, bytes, int]:
    """(key, value, partition) of the first state record in ``topic`` (not the app's bookkeeping)."""
    consumer = Consumer(
        {"bootstrap.servers": bench.bootstrap, "group.id": bench.name("peek"), "enable.auto.commit": False}
    )
    try:
        for partition, (low, high) in bench.broker.watermarks(topic).items():
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, partition, low)])
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                msg = consumer.poll(1.0)
                if msg is None or msg.error():
                    continue
                key, value = msg.key(), msg.value()
                if key is not None and value is not None and not key.startswith(b"__faust"):
                    return key, value, partition
    finally:
        consumer.close()
    raise RuntimeError(f"no record in {topic}")


def _check_ips(worker: StreamappWorker, ips: list[str]) -> str:
    """Whether ``GET /ips/{ip}`` answers each IP with its one failed login (state really rebuilt)."""
    good = 0
    for ip in ips:
        status, body = worker.get(f"/ips/{ip}")
        if status == 200 and sum(w["failed"] for w in orjson.loads(body)["windows"]) == 1:
            good += 1
    return f"{good}/{len(ips)} sampled IPs served with their count"


# -- profile --------------------------------------------------------------------------------------
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
        while _sample(worker.metrics(), _EVENTS, topic="logins") == 0:
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
    ("detector handlers (agents.base.detect_batch), all they call", ("detect_batch (agents/base.py",)),
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
