"""Scenario: changelog recovery of a large table, and a restart with local state."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import orjson
from aiokafka.partitioner import murmur2
from confluent_kafka import Consumer, TopicPartition

from bench.data import distinct_ip, fill_events, make_producer, produce
from bench.harness import POLL, REPORT_EVERY, Bench, detections_progress, fmt, group_topics, wait_committed
from bench.procs import StreamappWorker, free_port

logger = logging.getLogger("bench")

#: the brute force spec's states in ``detection-state``: key ``brute_force NUL ip``
STATE_PREFIX = b"brute_force\x00"


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
    """Fill ``detection-state`` with the brute force states of ``keys`` IPs, then rebuild it in an
    empty data dir.

    The first ``seed_keys`` IPs go through a real worker (one failed login each, so they are also
    one user each: an account takeover state each too); the others are appended to the table's
    changelog directly, each a copy of a brute force state the worker wrote, under its own key, in
    the partition the worker would have used. Filling a million keys through the worker would take
    longer than the rest of the bench.
    """
    out = RecoveryOutcome(keys=keys)
    prefix = bench.name("-rec-")
    app_id = bench.name("rc")
    topic = f"{prefix}logins"
    seeded = min(keys, seed_keys)
    bench.broker.create_topic(topic, bench.partitions)
    produce(bench.bootstrap, topic, fill_events(seeded), f"recovery seed ({fmt(seeded)} distinct IPs)")
    filler = bench.worker("recovery-fill", app_id, prefix, bench.work / "data" / "recovery-fill")
    # every seed login is a failed one: each login detection applies every one
    events = {"brute_force": seeded, "account_takeover": seeded}
    try:
        out.empty_ready_s = filler.start_ready(120)
        deadline = time.monotonic() + bench.timeout(seeded, 100)
        t0: float | None = None
        next_report = time.monotonic() + REPORT_EVERY
        while True:
            if not filler.alive():
                out.status, out.reason = "failed", f"fill worker exited: {filler.log_tail(5)}"
                return out
            try:
                metrics = filler.metrics()
            except OSError:
                time.sleep(POLL)
                continue
            ingested, pending = detections_progress(metrics, events, topic)
            now = time.time()
            if t0 is None and ingested > 0:
                t0 = now
            if ingested >= seeded and pending == 0:
                out.fill_rate = seeded / (now - t0) if t0 and now > t0 else None
                break
            if time.monotonic() > deadline:
                out.status, out.reason = (
                    "failed",
                    f"fill timed out at {fmt(ingested)} of {fmt(seeded)} logins",
                )
                return out
            if time.monotonic() >= next_report:
                logger.info(
                    "recovery: seeding, %s/%s logins ingested, %s in the pipeline",
                    fmt(ingested), fmt(seeded), fmt(pending),
                )  # fmt: skip
                next_report += REPORT_EVERY
            time.sleep(POLL)
        if wait_committed(bench, app_id, group_topics(bench, app_id, topic), 120) is None:
            logger.warning("recovery: the fill worker's offsets are not all committed")
    finally:
        filler.stop()
    out.seeded = seeded
    if keys > seeded:
        out.appended = append_to_changelog(bench, f"{app_id}-detection-state-changelog", seeded, keys)
    for name in sorted(bench.broker.topics()):
        if name.startswith(f"{app_id}-") and name.endswith("-changelog"):
            records = bench.broker.records(name)
            if records:
                out.changelogs[name.removeprefix(f"{app_id}-")] = records
    out.changelog_records = sum(out.changelogs.values())
    logger.info(
        "recovery: %s changelog records to rebuild from: %s", fmt(out.changelog_records), out.changelogs
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
            "recovery: ready after %.1f s (%s records/s)", out.recovery_ready_s, fmt(out.records_per_s)
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
    """Append the brute force states of ``distinct_ip(first .. end - 1)`` to ``changelog``
    (detection-state's), each a copy of a brute force state the worker wrote.

    The partition is the one the worker uses for the key: murmur2 of the IP's bytes alone (the
    entity: detection-state is partitioned as a source topic keyed by IP, the default partitioner
    of aiokafka/Java).
    """
    sample_key, sample_value, sample_partition = read_one(bench, changelog, STATE_PREFIX)
    partitions = bench.broker.partitions(changelog)
    if _partition_of(sample_key.removeprefix(STATE_PREFIX), len(partitions)) != sample_partition:
        raise RuntimeError(f"{changelog}: the worker's partitioning is not murmur2 of the IP; cannot append")
    producer = make_producer(bench.bootstrap)
    started = time.monotonic()
    for i in range(first, end):
        ip = distinct_ip(i).encode()
        while True:
            try:
                producer.produce(
                    changelog,
                    value=sample_value,
                    key=STATE_PREFIX + ip,
                    partition=_partition_of(ip, len(partitions)),
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
        fmt(end - first), changelog, time.monotonic() - started, sample_key.decode(errors="replace"),
    )  # fmt: skip
    return end - first


def _partition_of(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def read_one(bench: Bench, topic: str, prefix: bytes) -> tuple[bytes, bytes, int]:
    """(key, value, partition) of the first state record in ``topic`` whose key starts with ``prefix``."""
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
                if key is not None and value is not None and key.startswith(prefix):
                    return key, value, partition
    finally:
        consumer.close()
    raise RuntimeError(f"no record of {prefix!r} in {topic}")


def _check_ips(worker: StreamappWorker, ips: list[str]) -> str:
    """Whether ``GET /ips/{ip}`` answers each IP with its one failed login (state really rebuilt)."""
    good = 0
    for ip in ips:
        status, body = worker.get(f"/ips/{ip}")
        if status == 200 and sum(w["failed"] for w in orjson.loads(body)["windows"]) == 1:
            good += 1
    return f"{good}/{len(ips)} sampled IPs served with their count"
