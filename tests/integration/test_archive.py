"""The archive on a real S3 server (S3Proxy, `streamapp s3 up`) and the real broker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamapp.archive.store import ArchiveStore, concat_tables, object_path, records_table
from streamapp.dev.s3 import S3PROXY_VERSION, DevS3, fetch_s3proxy
from streamapp.settings import load_settings
from tests.integration.conftest import Names, free_port
from tests.integration.kafka_io import produce, read_all

pytestmark = pytest.mark.integration

PARTITIONS = 4


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[DevS3]:
    """An S3Proxy of this test's own on a free port (jars shared with the default home)."""
    libs = fetch_s3proxy()
    home = tmp_path / "s3-home"
    (home / "s3proxy" / S3PROXY_VERSION).mkdir(parents=True)
    (home / "s3proxy" / S3PROXY_VERSION / "libs").symlink_to(libs, target_is_directory=True)
    server = DevS3(home=home, port=free_port())
    server.up()
    yield server
    server.down()


def archive_env(s3: DevS3, names: Names, kafka_bootstrap: str, **overrides: str) -> dict[str, str]:
    creds = s3.credentials()
    return {
        **os.environ,
        "STREAMAPP_BROKER": f"kafka://{kafka_bootstrap}",
        "STREAMAPP_APP_ID": names.app_id,
        "STREAMAPP_TOPIC_PREFIX": names.prefix,
        "STREAMAPP_PARTITIONS": str(PARTITIONS),
        "STREAMAPP_ARCHIVE_URL": f"s3://streamapp/{names.app_id}",
        "STREAMAPP_ARCHIVE_ENDPOINT": s3.endpoint,
        "STREAMAPP_ARCHIVE_ACCESS_KEY": creds.access_key,
        "STREAMAPP_ARCHIVE_SECRET_KEY": creds.secret_key,
        **overrides,
    }


def store_of(env: dict[str, str]) -> ArchiveStore:
    return ArchiveStore(load_settings(env))


async def create_topics(bootstrap: str, topics: list[str], partitions: int = PARTITIONS) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    finally:
        await admin.close()


def start_archiver(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streamapp.cli", "archive", "run"], env=env, stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        proc.wait(60)


def archived_rows(store: ArchiveStore, topic: str) -> pa.Table | None:
    tables = [store.read(obj) for obj in store.objects(topic)]
    return concat_tables(tables) if tables else None


def wait_for_rows(store: ArchiveStore, topic: str, count: int, proc: subprocess.Popen[bytes], log: Path,
                  within: float = 120.0) -> pa.Table:  # fmt: skip
    deadline = time.monotonic() + within
    table = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the archiver exited {proc.returncode}:\n{log.read_text()[-3000:]}"
        table = archived_rows(store, topic)
        if table is not None and table.num_rows >= count:
            return table
        time.sleep(1.0)
    got = 0 if table is None else table.num_rows
    raise AssertionError(f"{topic}: {got} of {count} archived in {within:.0f} s:\n{log.read_text()[-3000:]}")


def logins(start: int, n: int) -> list[dict[str, object]]:
    base = time.time() - 3000
    return [
        {"user": f"u{i % 37}", "ip": f"10.0.{i % 5}.{i % 251}", "success": i % 3 == 0, "ts": base + i * 0.01}
        for i in range(start, start + n)
    ]


def test_every_record_is_archived_exactly_once_across_kill_and_s3_outage(
    s3: DevS3, names: Names, kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = archive_env(s3, names, kafka_bootstrap, STREAMAPP_ARCHIVE_ROLL_BYTES="20000",
                      STREAMAPP_ARCHIVE_ROLL_SECONDS="1")  # fmt: skip
    store = store_of(env)
    topic, dead = names.topic("logins"), names.topic("dead-letters")
    asyncio.run(create_topics(kafka_bootstrap, [topic, dead]))
    log = tmp_path / "archiver.log"
    garbage = [b"\xff\xfe not json", b"[1, 2]", b'{"user": {"nested": true}, "ts": "x"}']
    asyncio.run(produce(kafka_bootstrap, topic, [*logins(0, 4000), *garbage], key=lambda v: str(v["user"])))
    asyncio.run(produce(kafka_bootstrap, dead, [b"refused"], headers=[("x-error", b"why")]))
    proc = start_archiver(env, log)
    try:
        wait_for_rows(store, "logins", 1000, proc, log)
        stop(proc, signal.SIGKILL)  # mid-way: objects uploaded, some offsets maybe not committed
        asyncio.run(produce(kafka_bootstrap, topic, logins(4000, 3000), key=lambda v: str(v["user"])))
        proc = start_archiver(env, log)
        wait_for_rows(store, "logins", 5000, proc, log)
        s3.down()
        asyncio.run(produce(kafka_bootstrap, topic, logins(7000, 2000), key=lambda v: str(v["user"])))
        time.sleep(6)  # the archiver meets the outage and keeps retrying
        assert proc.poll() is None, log.read_text()[-3000:]
        s3.up()
        table = wait_for_rows(store, "logins", 9003, proc, log)
        wait_for_rows(store, "dead-letters", 1, proc, log)
    finally:
        stop(proc)
    text = log.read_text()
    assert "retrying with backoff" in text and "answers again" in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]

    # exactly the records of Kafka: every (partition, offset) once, with its key, value and time
    kafka = asyncio.run(read_all(kafka_bootstrap, topic, settle=0))
    assert table.num_rows == len(kafka) == 9003
    positions = list(zip(*(table[c].to_pylist() for c in ("kafka_partition", "kafka_offset")), strict=True))
    assert not [p for p, n in Counter(positions).items() if n > 1], "duplicate rows"
    archived = {
        (p, o): (k, v, ts)
        for p, o, k, v, ts in zip(
            *(table[c].to_pylist() for c in ("kafka_partition", "kafka_offset", "kafka_key", "kafka_value")),
            table["kafka_timestamp"].cast(pa.int64()).to_pylist(), strict=True,
        )
    }  # fmt: skip
    assert archived == {(r.partition, r.offset): (r.key, r.value, r.timestamp) for r in kafka}
    # the event's fields are columns; what is not a JSON object keeps only its raw value
    users = [u for u in table["user"].to_pylist() if u is not None]
    assert len(users) == 9001 and "u3" in users
    # objects never overlap and leave no gap within a partition
    for partition in range(PARTITIONS):
        objs = [o for o in store.objects("logins") if o.partition == partition]
        assert objs[0].first == 0
        for before, after in zip(objs, objs[1:], strict=False):
            assert after.first == before.last + 1, (before, after)
    # headers are kept (a dead letter's reason)
    dl = archived_rows(store, "dead-letters")
    assert dl is not None and dl["kafka_headers"].to_pylist() == [[{"key": "x-error", "value": b"why"}]]


def test_an_object_uploaded_but_never_committed_is_not_written_again(
    s3: DevS3, names: Names, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A crash between the upload and the commit: the next archiver goes on after that object."""
    env = archive_env(s3, names, kafka_bootstrap, STREAMAPP_ARCHIVE_ROLL_SECONDS="1")
    store = store_of(env)
    topic = names.topic("logins")
    asyncio.run(create_topics(kafka_bootstrap, [topic]))
    asyncio.run(produce(kafka_bootstrap, topic, logins(0, 800), key=lambda v: str(v["user"])))
    kafka = asyncio.run(read_all(kafka_bootstrap, topic, settle=0))
    crashed = sorted((r for r in kafka if r.partition == 0), key=lambda r: r.offset)[:50]
    path = object_path(store.root, "logins", 0, crashed[0].offset, crashed[-1].offset, crashed[0].timestamp)
    store.put(path, records_table(crashed))
    log = tmp_path / "archiver.log"
    proc = start_archiver(env, log)
    try:
        table = wait_for_rows(store, "logins", 800, proc, log)
        time.sleep(3)  # a duplicate would be uploaded within the roll time
        table = archived_rows(store, "logins")
    finally:
        stop(proc)
    assert table is not None and table.num_rows == 800
    firsts = [o.first for o in store.objects("logins") if o.partition == 0]
    assert firsts[:2] == [0, 50], firsts


def test_archive_ls_lists_objects_counts_and_offsets(
    s3: DevS3, names: Names, kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = archive_env(s3, names, kafka_bootstrap, STREAMAPP_ARCHIVE_ROLL_SECONDS="1")
    topic = names.topic("logins")
    asyncio.run(create_topics(kafka_bootstrap, [topic]))
    asyncio.run(produce(kafka_bootstrap, topic, logins(0, 400), key=lambda v: str(v["user"])))
    log = tmp_path / "archiver.log"
    proc = start_archiver(env, log)
    try:
        wait_for_rows(store_of(env), "logins", 400, proc, log)
    finally:
        stop(proc)
    out = subprocess.run(
        [sys.executable, "-m", "streamapp.cli", "archive", "ls", "--topic", "logins"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    lines = [line.split() for line in out.splitlines() if line.startswith("logins")]
    assert len(lines) == PARTITIONS, out
    assert sum(int(line[3].replace(",", "")) for line in lines) == 400, out
    assert "total:" in out and "400 records" in out, out


async def _delete_all_records(bootstrap: str, topics: list[str]) -> dict[str, int]:
    """Make Kafka drop every record of ``topics`` now, as retention would; records deleted per topic."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin.records_to_delete import RecordsToDelete

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await consumer.start()
    await admin.start()
    try:
        parts = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(parts)
        await admin.delete_records({tp: RecordsToDelete(ends[tp]) for tp in parts}, timeout_ms=30000)
        starts = await consumer.beginning_offsets(parts)
        assert starts == ends, "Kafka still holds records"
        return {t: sum(ends[tp] for tp in parts if tp.topic == t) for t in topics}
    finally:
        await admin.close()
        await consumer.stop()


def test_replay_from_the_archive_rebuilds_what_kafka_has_deleted(
    s3: DevS3, names: Names, kafka_bootstrap: str, worker_factory, tmp_path: Path
) -> None:
    from tests.integration.test_replay import _alert_ids, _brute_force, _logins, _velocity

    env = archive_env(s3, names, kafka_bootstrap, STREAMAPP_ARCHIVE_ROLL_SECONDS="1")
    live = worker_factory()
    base = (time.time() - 1800) // 60 * 60
    old_logins = _logins(base, 20, 6, "71") + _brute_force(base + 600, "10.71.9.9")
    old_txns = _velocity(base + 700, "burst-card")
    asyncio.run(produce(kafka_bootstrap, names.topic("logins"), old_logins, key=lambda v: str(v["ip"])))
    txns = names.topic("transactions")
    asyncio.run(produce(kafka_bootstrap, txns, old_txns, key=lambda v: str(v["card_id"])))
    log = tmp_path / "archiver.log"
    proc = start_archiver(env, log)
    try:
        store = store_of(env)
        wait_for_rows(store, "logins", len(old_logins), proc, log)
        wait_for_rows(store, "transactions", len(old_txns), proc, log)
    finally:
        stop(proc)
    live.wait_for_metric("streamapp_alerts_total", lambda v: v == 1, timeout=90, kind="card_velocity")
    deleted = asyncio.run(_delete_all_records(kafka_bootstrap, [names.topic("logins"), txns]))
    assert deleted[names.topic("logins")] == len(old_logins)
    # after the archive's end: only in Kafka
    new_logins = _brute_force(base + 900, "10.71.8.8")
    asyncio.run(produce(kafka_bootstrap, names.topic("logins"), new_logins, key=lambda v: str(v["ip"])))
    live.wait_for_metric("streamapp_alerts_total", lambda v: v == 2, timeout=90, kind="brute_force")
    live_alerts = sorted(asyncio.run(_alert_ids(kafka_bootstrap, names)))
    assert len(live_alerts) == 3

    def replay(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streamapp.cli", "replay", *args], env=env, capture_output=True,
            text=True, timeout=300,
        )  # fmt: skip

    # Kafka alone holds only the tail: a plain replay would see 10 of the records
    new_id = f"{names.app_id}-a1"
    done = replay("--app-id", new_id, "--from-archive", "--alerts", "--data-dir", str(tmp_path / "a1"))
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert f"staged logins: {len(old_logins):,} records from the archive" in out, out[-4000:]
    assert f"then {len(new_logins):,} from Kafka" in out, out[-4000:]
    assert "replay 100.0%" in out, out[-4000:]
    staged_alerts = asyncio.run(read_all(kafka_bootstrap, f"{new_id}.archive.{names.prefix}alerts"))
    import orjson

    assert sorted(orjson.loads(r.value)["alert_id"] for r in staged_alerts) == live_alerts


def test_batch_agrees_with_the_stream_and_names_a_deleted_alert(
    s3: DevS3, names: Names, kafka_bootstrap: str, worker_factory, tmp_path: Path
) -> None:
    import json

    import orjson

    from tests.integration.test_replay import _brute_force, _logins, _readings, _transactions, _velocity

    env = archive_env(s3, names, kafka_bootstrap, STREAMAPP_ARCHIVE_ROLL_SECONDS="1")
    live = worker_factory()
    base = (time.time() - 1800) // 60 * 60
    logins = _logins(base, 20, 6, "72") + _brute_force(base + 600, "10.72.9.9")
    readings = _readings(base, 10, 10, "b") + [{"ts": base + 5, "sensor_id": "hot-2", "temperature": 130.0}]
    txns = _transactions(base, 10, 5, "b") + _velocity(base + 700, "burst-2")
    asyncio.run(produce(kafka_bootstrap, names.topic("logins"), logins, key=lambda v: str(v["ip"])))
    asyncio.run(
        produce(kafka_bootstrap, names.topic("sensor-readings"), readings, key=lambda v: str(v["sensor_id"]))
    )
    asyncio.run(produce(kafka_bootstrap, names.topic("transactions"), txns, key=lambda v: str(v["card_id"])))
    for kind in ("brute_force", "high_temperature", "card_velocity"):
        live.wait_for_metric("streamapp_alerts_total", lambda v: v >= 1, timeout=120, kind=kind)
    log = tmp_path / "archiver.log"
    proc = start_archiver(env, log)
    store = store_of(env)
    try:
        wait_for_rows(store, "logins", len(logins), proc, log)
        wait_for_rows(store, "sensor-readings", len(readings), proc, log)
        wait_for_rows(store, "transactions", len(txns), proc, log)
        alerts = wait_for_rows(store, "alerts", 3, proc, log)
    finally:
        stop(proc)

    def batch(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streamapp.cli", "batch", "--since", str(base - 60),
             "--until", str(base + 3600), *extra],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    agree = batch("--json", str(tmp_path / "ok.json"))
    assert agree.returncode == 0, agree.stdout + agree.stderr
    report = json.loads((tmp_path / "ok.json").read_text())
    assert report["agrees"] and report["stream_alerts"] == report["batch_alerts"] >= 3, report
    assert "stream and batch agree" in agree.stdout

    # doctor the archive: the object holding the brute_force alert loses that row
    victim = next(orjson.loads(v) for v in alerts["kafka_value"].to_pylist() if b"brute_force" in v)
    for obj in store.objects("alerts"):
        table = store.read(obj)
        keep = [orjson.loads(v)["alert_id"] != victim["alert_id"] for v in table["kafka_value"].to_pylist()]
        if not all(keep):
            store.put(obj.path, table.filter(pa.array(keep)))
    differ = batch("--json", "-")
    assert differ.returncode == 1, differ.stdout + differ.stderr
    report = json.loads(differ.stdout)
    assert [a["alert_id"] for a in report["only_in_batch"]] == [victim["alert_id"]], report
    assert report["only_in_stream"] == []
    assert victim["alert_id"] in differ.stderr and "DIFFER" in differ.stderr
