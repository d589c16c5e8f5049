"""Shared plumbing of the bench: one run's names and limits, a throughput figure, progress polling."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from bench.kafka_util import Broker
from bench.procs import Proc, StreamappWorker, free_port
from bench.progress import read_progress

logger = logging.getLogger("bench")

EVENTS_METRIC = "streamapp_events_total"
POLL = 0.2  # seconds between looks at a contender's progress
REPORT_EVERY = 5.0  # seconds between progress lines in the log


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
        extra_env: dict[str, str] | None = None,
    ) -> StreamappWorker:
        """A worker of this run running the shipped detections ``rules`` (STREAMAPP_RULES, as their
        specs; "none": only those applied through the control topic, as the spec rows do)."""
        port = port or free_port()
        env = {
            "STREAMAPP_RULES": rules,
            **os.environ,
            **(extra_env or {}),
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


def fmt(n: float) -> str:
    return f"{n:,.0f}"


def cpu_pct(start: tuple[float, float | None] | None, proc: Proc) -> float | None:
    """Percent of one core ``proc`` used since ``start`` = (time.time(), its CPU seconds then)."""
    now, cpu = time.time(), proc.cpu_seconds()
    if start is None or start[1] is None or cpu is None or now - start[0] < 0.5:
        return None  # too short a window to say
    return 100 * (cpu - start[1]) / (now - start[0])


def wait_committed(bench: Bench, group: str, topics: list[str], timeout: float) -> float | None:
    """Poll until ``group`` has committed every record of ``topics``; time.time() then, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if bench.broker.lag(group, topics) == 0:
                return time.time()
        except Exception as exc:  # the broker is shared and busy: one failed look is not the end
            logger.debug("lag of %s: %s", group, exc)
        time.sleep(POLL)
    return None


Metrics = dict[tuple[str, frozenset[tuple[str, str]]], float]


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def by_topic(metrics: Metrics, name: str) -> dict[str, float]:
    return {dict(labels).get("topic", ""): v for (n, labels), v in metrics.items() if n == name}


def pipeline_progress(metrics: Metrics) -> tuple[float, float]:
    """(logins ingested, records still in the worker's pipeline) from a worker's ``/metrics``.

    In the pipeline: records the worker sent to a topic it also reads (``<app>-detection-events``) but
    has not received yet, plus messages received and not yet acknowledged (``faust_active_messages``).
    Both 0 once every agent downstream of ``logins`` has handled everything, whatever the topology.
    """
    ingested = sample(metrics, EVENTS_METRIC, topic="logins")
    # faust labels what it sent "topic.<name>" and what it received "<name>"
    sent_labels = by_topic(metrics, "faust_topic_messages_sent_total")
    sent = {topic.removeprefix("topic."): n for topic, n in sent_labels.items()}
    received = by_topic(metrics, "faust_messages_received_per_topic_total")
    in_flight = sum(max(0.0, n - received[topic]) for topic, n in sent.items() if topic in received)
    return ingested, in_flight + max(0.0, sample(metrics, "faust_active_messages"))


def spec_progress(metrics: Metrics, detection: str, source: str, events: int) -> tuple[float, float]:
    """(logins ingested, events still to apply) for a worker running the detection spec ``detection``.

    ``events``: how many records of ``source`` (the full topic name) pass the spec's ``where``. Each
    is done once the engine has applied it to its key's state
    (``streamapp_detection_events_total``) or sent it to late-events; plus what
    :func:`pipeline_progress` still sees in the pipeline.
    """
    ingested, in_flight = pipeline_progress(metrics)
    done = sample(metrics, "streamapp_detection_events_total", detection=detection) + sample(
        metrics, "streamapp_late_events_total", topic=source
    )
    return ingested, in_flight + max(0.0, events - done)


def detections_progress(metrics: Metrics, events: Mapping[str, int], source: str) -> tuple[float, float]:
    """(logins ingested, events still to apply) for a worker running the detections of ``events``
    (detection -> how many records of ``source`` pass its ``where``): the most any of them has
    left (:func:`spec_progress`)."""
    ingested, pending = sample(metrics, EVENTS_METRIC, topic="logins"), 0.0
    for detection, count in events.items():
        ingested, left = spec_progress(metrics, detection, source, count)
        pending = max(pending, left)
    return ingested, pending


def group_topics(bench: Bench, app_id: str, source: str) -> list[str]:
    """The source topic and the app's internal topics it reads (not its changelogs)."""
    internal = [
        t for t in bench.broker.topics()
        if t.startswith(f"{app_id}-") and not t.endswith("-changelog") and "__assignor" not in t
    ]  # fmt: skip
    return [source, *sorted(internal)]


def progress_contender(
    bench: Bench,
    out: Outcome,
    cmd: list[str],
    env: dict[str, str],
    group: str,
    topic: str,
    expect: int,
    label: str | None = None,
    internal: Callable[[], list[str]] | None = None,
) -> Outcome:
    """Run a contender process that keeps a progress file; rate from its first to its last event.

    ``label`` names its log and progress files (default: the first word of its name); ``internal``
    lists the topics of its own it reads besides ``topic`` (committed too before "to committed").
    """
    label = label or out.name.split()[0].lower()
    progress_path = bench.work / f"{label}{bench.r}-progress.json"
    env = {**env, "BENCH_PROGRESS": str(progress_path), "BENCH_EXPECT": str(expect)}
    proc = Proc(label, cmd, env, bench.work / "logs" / f"{label}{bench.r}.log")
    proc.start()
    try:
        deadline = time.monotonic() + 90 * bench.timeout_scale + bench.timeout(expect)
        next_report = time.monotonic() + REPORT_EVERY
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
                    f"exited with {proc.returncode()} after {fmt(progress.count)} events: {proc.log_tail(5)}"
                )
            if time.monotonic() > deadline:
                out.status, out.reason = (
                    "partial",
                    f"timed out: {fmt(progress.count)} of {fmt(expect)} events",
                )
                break
            if time.monotonic() >= next_report:
                logger.info(
                    "%s: %s/%s events (%s/s)",
                    label,
                    fmt(progress.count),
                    fmt(expect),
                    fmt(progress.rate() or 0),
                )
                next_report += REPORT_EVERY
            time.sleep(POLL)
        out.rss_mb = proc.rss_mb() or rss
        out.cpu_pct = cpu_pct(cpu0, proc)
        if progress.first is None or progress.last is None or progress.rate() is None:
            return out.fail(f"no events processed ({progress.count})")
        out.events = progress.count - progress.first_count
        out.seconds = progress.last - progress.first
        out.rate = progress.rate()
        if out.status == "ok":
            committed = wait_committed(bench, group, [topic, *(internal() if internal else [])], 60)
            if committed is not None:
                out.committed_seconds = committed - progress.first
        return out
    finally:
        proc.stop()


T = TypeVar("T")


def guarded(label: str, step: Callable[[], T], failed: Callable[[str], T]) -> T:
    """Run one measurement; an exception becomes a failed figure in the report, not the end of the run."""
    logger.info("── %s", label)
    started = time.monotonic()
    try:
        result = step()
    except Exception as exc:
        logger.exception("%s failed", label)
        result = failed(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
    logger.info("   %s done in %.0f s", label, time.monotonic() - started)
    return result
