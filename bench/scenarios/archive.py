"""Scenario: the archiver copies the logins topic to Parquet on S3Proxy; records/s against the worker's."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from bench.data import Dataset
from bench.harness import Bench, Outcome, fmt, progress_contender
from streamapp.archive.archiver import archiver_group
from streamapp.archive.store import ArchiveStore
from streamapp.dev.process import port_in_use
from streamapp.dev.s3 import DEFAULT_BUCKET, DevS3, fetch_s3proxy
from streamapp.settings import load_settings

__all__ = ["ARCHIVE_NAME", "ARCHIVE_ROLL_BYTES", "S3_PORTS", "ArchiveOutcome", "archive"]

logger = logging.getLogger("bench")

ARCHIVE_NAME = "archiver (Parquet on S3Proxy)"
#: objects rolled at 1 MiB of record bytes (about 11,000 logins): several objects per partition at
#: the bench's sizes, as the 60-s roll age gives a live archiver at one worker's rate; the 16-MiB
#: default would make one object per partition of the whole backlog
ARCHIVE_ROLL_BYTES = 1024 * 1024
#: the bench's own S3Proxy listens on the first free port here (tests and `streamapp s3 up` use others)
S3_PORTS = range(19400, 19500)
#: throwaway objects of about an archived object's size put (8 at a time, like the archiver's uploads)
#: and deleted before the archiver starts: the S3Proxy JVM started for this run answers its first
#: PUTs several times slower (class loading, JIT), a start-up cost, as the broker is warm already
WARM_UP_OBJECTS = 24


@dataclass
class ArchiveOutcome:
    """Records/s from the topic to committed Parquet objects, and the ratio to the worker's events/s."""

    status: str = "ok"  # ok | partial (timed out) | failed
    reason: str = ""
    records: int = 0  # records in committed objects, counted by the archiver
    seconds: float | None = None  # partition assignment -> the last object uploaded and committed
    rate: float | None = None
    committed_seconds: float | None = None  # first record -> the group's offsets at the topic's end
    objects: int | None = None  # listed in the bucket after the run
    bytes: int | None = None
    archived: int | None = None  # records the listed objects cover (offset ranges)
    upload_seconds: float | None = None  # building, encoding, uploading, committing: summed over uploads
    wait_seconds: float | None = None  # of ``seconds``: fetching waited for a free upload slot
    cpu_pct: float | None = None  # the archiver process (S3Proxy's JVM not counted)
    rss_mb: float | None = None
    roll_bytes: int = ARCHIVE_ROLL_BYTES
    worker_rate: float | None = None  # the streamapp worker's events/s in the same run
    ratio: float | None = None  # rate / worker_rate: at least 1 means it keeps up with one worker
    check: str = ""


def _s3(bench: Bench) -> DevS3:
    """An S3Proxy of this run under its work dir (the jars linked from ~/.streamapp), on a free port."""
    libs = fetch_s3proxy(progress=logger.info)
    home = bench.work / "s3"
    home.mkdir(parents=True, exist_ok=True)
    link = home / "s3proxy"
    if not link.exists():
        link.symlink_to(libs.parent.parent, target_is_directory=True)  # .../s3proxy/<version>/libs
    port = next((p for p in S3_PORTS if not port_in_use("127.0.0.1", p)), None)
    if port is None:
        raise RuntimeError(f"no free port in {S3_PORTS.start}-{S3_PORTS.stop - 1} for S3Proxy")
    return DevS3(home=home, port=port)


def archive(bench: Bench, data: Dataset, worker_rate: float | None) -> ArchiveOutcome:
    """Run ``bench.archive_runner`` (streamapp's Archiver) over ``data.topic`` from its start until every
    record is in an uploaded object with its offset committed; then list the bucket to check."""
    out = ArchiveOutcome(worker_rate=worker_rate)
    s3 = _s3(bench)
    s3.up(progress=logger.info)
    try:
        creds = s3.credentials()
        app_id = bench.name("ar")
        env = {
            **os.environ,
            "STREAMAPP_BROKER": f"kafka://{bench.bootstrap}",
            "STREAMAPP_APP_ID": app_id,
            "STREAMAPP_TOPIC_PREFIX": data.topic.removesuffix("logins"),
            "STREAMAPP_PARTITIONS": str(bench.partitions),
            "STREAMAPP_ARCHIVE_URL": f"s3://{DEFAULT_BUCKET}/{bench.name('')}",
            "STREAMAPP_ARCHIVE_ENDPOINT": s3.endpoint,
            "STREAMAPP_ARCHIVE_ACCESS_KEY": creds.access_key,
            "STREAMAPP_ARCHIVE_SECRET_KEY": creds.secret_key,
            "STREAMAPP_ARCHIVE_ROLL_BYTES": str(out.roll_bytes),
        }
        _warm_up(env)
        measured = progress_contender(
            bench,
            Outcome(ARCHIVE_NAME),
            [sys.executable, "-m", "bench.archive_runner"],
            env,
            archiver_group(load_settings(env)),
            data.topic,
            data.events,
        )
        out.status, out.reason = measured.status, measured.reason
        out.records, out.seconds, out.rate = measured.events, measured.seconds, measured.rate
        out.committed_seconds, out.cpu_pct, out.rss_mb = (
            measured.committed_seconds,
            measured.cpu_pct,
            measured.rss_mb,
        )
        if out.rate and worker_rate:
            out.ratio = out.rate / worker_rate
        _check(out, ArchiveStore(load_settings(env)), data, bench.work / "archiver-progress.stats.json")
        return out
    finally:
        s3.down(progress=logger.info)
        shutil.rmtree(s3.data_dir, ignore_errors=True)


def _warm_up(env: dict[str, str]) -> None:
    store = ArchiveStore(load_settings({**env, "STREAMAPP_ARCHIVE_URL": f"s3://{DEFAULT_BUCKET}/warm-up"}))
    store.ensure_bucket()
    table = pa.table({"kafka_value": pa.array([os.urandom(64).hex().encode() for _ in range(3000)])})
    with ThreadPoolExecutor(8) as threads:
        list(threads.map(lambda i: store.put(f"{store.root}/{i}.parquet", table), range(WARM_UP_OBJECTS)))
    store.fs.delete_dir(store.root)


def _check(out: ArchiveOutcome, store: ArchiveStore, data: Dataset, stats_file: Path) -> None:
    """Every record in exactly one listed object: per partition, offset ranges contiguous from 0."""
    objects = store.objects("logins")
    out.objects, out.bytes = len(objects), sum(obj.size for obj in objects)
    out.archived = sum(obj.last - obj.first + 1 for obj in objects)
    ends: dict[int, int] = {}
    gaps = 0
    for obj in objects:  # sorted by partition, then offsets
        if obj.first != ends.get(obj.partition, 0):
            gaps += 1
        ends[obj.partition] = obj.last + 1
    try:
        told = json.loads(stats_file.read_text())
    except (OSError, ValueError):
        told = {}
    out.check = (
        f"{fmt(out.archived)} of {fmt(data.events)} records in {fmt(out.objects)} objects, "
        f"{'contiguous' if not gaps else f'{gaps} gaps or overlaps'} per partition"
        + (f"; the archiver counted {fmt(told['objects'])} uploads" if "objects" in told else "")
    )
    out.upload_seconds, out.wait_seconds = told.get("upload_seconds"), told.get("wait_seconds")
    if out.status == "ok" and (out.archived != data.events or gaps):
        out.status, out.reason = "failed", out.check
