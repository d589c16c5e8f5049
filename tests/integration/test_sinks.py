"""Sinks on the real PostgreSQL and InfluxDB: rows match, outages, kill -9, bursts with bounded memory."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.conftest import Names, SinkTargets, Worker
from tests.integration.kafka_io import every_other_keyed, produce, read_all, read_until

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


# -- helpers --------------------------------------------------------------------------------
def readings(sensors: list[str], per_sensor: int, start: float, hot_every: int = 0) -> list[dict[str, Any]]:
    """``per_sensor`` readings per sensor spread over three minutes of event time from ``start``."""
    out = []
    for i in range(per_sensor):
        for n, sensor in enumerate(sensors):
            hot = hot_every and i % hot_every == hot_every - 1 and n % 2 == 0
            out.append(
                {
                    "ts": start + (i * 180.0 / per_sensor) + n * 0.01,
                    "sensor_id": sensor,
                    "temperature": 120.0 + n if hot else 20.0 + (i % 7) * 0.5 + n,
                }
            )
    return out


def query(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def try_query(dsn: str, sql: str) -> list[asyncpg.Record] | None:
    try:
        return query(dsn, sql)
    except (OSError, asyncpg.PostgresError):
        return None


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    step: float = 0.5,
    state: Callable[[], Any] | None = None,
) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(
                f"timeout after {timeout:.0f} s waiting for {what}; now: {state() if state else '?'}"
            )
        time.sleep(step)
    return time.monotonic() - started


def windows_total(dsn: str) -> int:
    rows = try_query(dsn, "SELECT coalesce(sum(count), 0) AS n FROM sensor_windows")
    return -1 if rows is None else int(rows[0]["n"])


def influx_points(targets: SinkTargets) -> dict[tuple[str, float], dict[str, float]]:
    body = targets.servers.influx.query(
        "SELECT * FROM sensor_window GROUP BY sensor_id", database=targets.influx_database
    )
    points: dict[tuple[str, float], dict[str, float]] = {}
    for series in body["results"][0].get("series", []):
        sensor = series["tags"]["sensor_id"]
        for values in series["values"]:
            row = dict(zip(series["columns"], values, strict=True))
            points[(sensor, float(row["time"]))] = row
    return points


def pg_windows(dsn: str) -> dict[tuple[str, float], asyncpg.Record]:
    return {(r["sensor_id"], r["window_start"]): r for r in query(dsn, "SELECT * FROM sensor_windows")}


def assert_windows_match_views(worker: Worker, dsn: str, sensors: list[str]) -> int:
    """Every window of every sensor's /sensors view is a row (same numbers), and nothing else is."""
    rows = pg_windows(dsn)
    seen = 0
    for sensor in sensors:
        status, view = worker.get(f"/sensors/{sensor}")
        assert status == 200, (sensor, view)
        for window in view["windows"]:
            row = rows[(sensor, float(window["start"]))]
            assert (row["window_end"], row["count"]) == (window["end"], window["count"]), (sensor, window)
            assert abs(row["min"] - window["min"]) < 1e-9 and abs(row["max"] - window["max"]) < 1e-9
            assert abs(row["mean"] - window["mean"]) < 1e-6
            seen += 1
    assert seen == len(rows), f"{len(rows)} rows for {seen} windows in the views"
    return seen


def assert_alerts_match_topic(bootstrap: str, names: Names, dsn: str) -> int:
    published = [orjson.loads(r.value) for r in asyncio.run(read_all(bootstrap, names.topic("alerts")))]
    ids = {a["alert_id"] for a in published}
    rows = query(dsn, "SELECT alert_id, kind, key, window_start FROM alerts")
    assert len(rows) == len({r["alert_id"] for r in rows})  # the primary key holds
    assert {r["alert_id"] for r in rows} == ids
    by_id = {a["alert_id"]: a for a in published}
    for row in rows:
        alert = by_id[row["alert_id"]]
        assert (row["kind"], row["key"], row["window_start"]) == (
            alert["kind"],
            alert["key"],
            alert["window_start"],
        )
    return len(ids)


def sink_env(targets: SinkTargets, postgres: bool = True, influx: bool = True) -> dict[str, str]:
    # readings are produced over minutes of event time, half of them without keys: a worker
    # may fetch one partition's minutes before another's, so the grace covers that span
    env = {"STREAMAPP_GRACE_SECONDS": "600"}
    if postgres:
        env["STREAMAPP_POSTGRES_DSN"] = targets.postgres_dsn
    if influx:
        env["STREAMAPP_INFLUX_URL"] = targets.influx_url
    return env


# -- tests ----------------------------------------------------------------------------------
@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_rows_and_points_match_the_alerts_and_windows(
    kafka_bootstrap: str,
    names: Names,
    worker_factory: Callable[..., Worker],
    sink_targets: SinkTargets,
    guarantee: str,
) -> None:
    worker = worker_factory(STREAMAPP_PROCESSING_GUARANTEE=guarantee, **sink_env(sink_targets))
    sensors = [f"s-{n}" for n in range(8)]
    start = (time.time() // 60) * 60 - 240
    data = readings(sensors, 45, start, hot_every=15)
    asyncio.run(
        produce(kafka_bootstrap, names.topic("sensor-readings"), data, key=every_other_keyed("sensor_id"))
    )

    wait_until(
        lambda: windows_total(sink_targets.postgres_dsn) == len(data), 120, "every reading in PostgreSQL"
    )
    alerts = assert_alerts_match_topic(kafka_bootstrap, names, sink_targets.postgres_dsn)
    assert alerts >= 4  # high_temperature at least, on the even sensors
    windows = assert_windows_match_views(worker, sink_targets.postgres_dsn, sensors)
    rows = pg_windows(sink_targets.postgres_dsn)

    wait_until(lambda: len(influx_points(sink_targets)) == len(rows), 60, "every window in InfluxDB")
    wait_until(
        lambda: all(p["count"] == rows[k]["count"] for k, p in influx_points(sink_targets).items()),
        60, "InfluxDB points with the final counts",
    )  # fmt: skip
    for key, point in influx_points(sink_targets).items():
        row = rows[key]
        assert (point["count"], point["min"], point["max"]) == (row["count"], row["min"], row["max"])
        assert abs(point["mean"] - row["mean"]) < 1e-9 and point["window_end"] == row["window_end"]
    assert windows == len(rows) >= len(sensors) * 3


def test_postgres_down_mid_stream_then_back(
    kafka_bootstrap: str, names: Names, worker_factory: Callable[..., Worker], sink_targets: SinkTargets
) -> None:
    worker = worker_factory(**sink_env(sink_targets, influx=False))
    dsn = sink_targets.postgres_dsn
    port = str(sink_targets.servers.postgres.port)
    sensors = [f"p-{n}" for n in range(6)]
    start = (time.time() // 60) * 60 - 240
    first = readings(sensors, 20, start)
    second = readings(sensors, 30, start + 1.0, hot_every=10)
    topic = names.topic("sensor-readings")
    asyncio.run(produce(kafka_bootstrap, topic, first, key=lambda v: v["sensor_id"]))
    wait_until(lambda: windows_total(dsn) == len(first), 120, "the first readings in PostgreSQL")

    sink_targets.servers.cli("postgres", "down", "--port", port)
    try:
        asyncio.run(produce(kafka_bootstrap, topic, second, key=every_other_keyed("sensor_id")))
        total = len(first) + len(second)
        # the detectors go on; the sink retries with backoff and keeps its offsets
        worker.wait_for_metric("streamapp_events_total", lambda v: v >= total, 120, topic="sensor-readings")
        worker.wait_for_metric("streamapp_sink_retries_total", lambda v: v >= 2, 60, sink="postgres")
        assert worker.metric("streamapp_sink_lag", sink="postgres") > 0
        time.sleep(3)
    finally:
        sink_targets.servers.cli("postgres", "up", "--port", port)
    caught_up = wait_until(lambda: windows_total(dsn) == total, 120, "every reading after the outage")
    assert_alerts_match_topic(kafka_bootstrap, names, dsn)
    assert_windows_match_views(worker, dsn, sensors)
    worker.wait_for_metric("streamapp_sink_lag", lambda v: v == 0, 30, sink="postgres")
    assert "consumption paused, retrying" in worker.log_text()
    print(f"caught up {caught_up:.1f} s after PostgreSQL came back")


def test_kill_9_mid_write_and_restart(
    kafka_bootstrap: str, names: Names, worker_factory: Callable[..., Worker], sink_targets: SinkTargets
) -> None:
    worker = worker_factory(**sink_env(sink_targets))
    dsn = sink_targets.postgres_dsn
    sensors = [f"k-{n}" for n in range(20)]
    start = (time.time() // 60) * 60 - 240
    data = readings(sensors, 300, start, hot_every=50)  # 6000 readings
    topic = names.topic("sensor-readings")
    chunks = [data[i : i + 500] for i in range(0, len(data), 500)]
    producing = threading.Thread(
        target=lambda: [
            (
                asyncio.run(produce(kafka_bootstrap, topic, chunk, key=lambda v: v["sensor_id"])),
                time.sleep(0.5),
            )
            for chunk in chunks
        ]
    )
    producing.start()
    # kill while the sink writes: rows are arriving but far from all of them
    wait_until(lambda: 500 <= windows_total(dsn) < len(data) // 2, 120, "the sink writing", step=0.1)
    worker.kill()
    producing.join()
    worker.restart().wait_ready()
    wait_until(lambda: windows_total(dsn) == len(data), 180, "every reading after kill -9 and restart")
    alerts = assert_alerts_match_topic(kafka_bootstrap, names, dsn)
    assert alerts > 0
    windows = assert_windows_match_views(worker, dsn, sensors)
    wait_until(lambda: len(influx_points(sink_targets)) == windows, 60, "every window in InfluxDB")
    rows = pg_windows(dsn)
    wait_until(
        lambda: all(p["count"] == rows[k]["count"] for k, p in influx_points(sink_targets).items()),
        60, "InfluxDB points with the final counts",
    )  # fmt: skip


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _blast(bootstrap: str, topic: str, values: list[bytes], per_second: float = 0) -> float:
    """Produce as fast as the client goes, or at ``per_second``; return the seconds it took.

    The record batches are built before the clock starts and sent whole, paced by the records
    they hold: building them (a Python call per record) would otherwise cap the rate below ten
    times a fast worker's, with producer and worker sharing two cores.
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=1024 * 1024, linger_ms=5)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        batches = [producer.create_batch()]
        for value in values:
            if batches[-1].append(key=None, value=value, timestamp=None) is None:
                batches.append(producer.create_batch())
                batches[-1].append(key=None, value=value, timestamp=None)
        started = time.monotonic()
        pending, sent = [], 0
        for turn, batch in enumerate(batches):
            if per_second:
                # hold the rate: a batch leaves when the records before it are due
                await asyncio.sleep(max(0.0, started + sent / per_second - time.monotonic()))
            sent += batch.record_count()
            partition = partitions[turn % len(partitions)]
            pending.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*pending)
        return time.monotonic() - started
    finally:
        await producer.stop()


def test_burst_ten_times_the_processing_rate_keeps_memory_bounded(
    kafka_bootstrap: str, names: Names, worker_factory: Callable[..., Worker], sink_targets: SinkTargets
) -> None:
    worker = worker_factory(
        STREAMAPP_MAX_POLL_RECORDS="200",
        STREAMAPP_STREAM_BUFFER="1000",
        **sink_env(sink_targets, influx=False),
    )
    assert worker.proc is not None
    pid = worker.proc.pid
    topic = names.topic("sensor-readings")
    sensors = [f"b-{n}" for n in range(200)]
    now = time.time()

    def batch(n: int, offset: int) -> list[bytes]:
        return [
            orjson.dumps({"ts": now - 120 + ((offset + i) % 1000) * 0.1, "sensor_id": sensors[i % 200],
                          "temperature": 20.0 + (i % 11)})
            for i in range(n)
        ]  # fmt: skip

    # processing rate: a backlog of warm-up records, counted while the worker works through it
    warmup = 20_000  # enough to time: the worker handles thousands of readings per second
    asyncio.run(_blast(kafka_bootstrap, topic, batch(warmup, 0)))
    worker.wait_for_metric("streamapp_events_total", lambda v: v >= 500, 300, topic="sensor-readings")
    t1, n1 = time.monotonic(), worker.metric("streamapp_events_total", topic="sensor-readings")
    worker.wait_for_metric("streamapp_events_total", lambda v: v >= warmup, 180, topic="sensor-readings")
    t2, n2 = time.monotonic(), worker.metric("streamapp_events_total", topic="sensor-readings")
    rate = (n2 - n1) / (t2 - t1)
    wait_until(
        lambda: windows_total(sink_targets.postgres_dsn) == warmup, 300, "warm-up in PostgreSQL",
        state=lambda: (
            windows_total(sink_targets.postgres_dsn), worker.metric("streamapp_sink_lag", sink="postgres"),
            worker.metric("streamapp_sink_records_total", sink="postgres"), worker.log_tail(5),
        ),
    )  # fmt: skip
    time.sleep(2)
    baseline = _rss_mib(pid)

    # the burst: ten times that rate for 3 s (~150,000 records on this machine)
    size = int(rate * 10 * 3)
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(_rss_mib(pid))
            time.sleep(0.2)

    def consumer_lag() -> float:
        return sum(worker.metric("streamapp_consumer_lag", partition=str(p), topic=topic) for p in range(4))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        took = asyncio.run(_blast(kafka_bootstrap, topic, batch(size, warmup), per_second=rate * 10))
        burst_rate = size / took
        total = warmup + size
        lags: list[float] = []

        def processed() -> bool:
            lags.append(consumer_lag())
            return worker.metric("streamapp_events_total", topic="sensor-readings") >= total

        drained = wait_until(processed, 900, "the burst processed", step=1.0)
        sink_drained = wait_until(
            lambda: windows_total(sink_targets.postgres_dsn) == total,
            300,
            "the burst in PostgreSQL",
            step=1.0,
        )
    finally:
        stop.set()
        sampler.join()
    peak = max(samples)
    figures = {
        "processing_rate_per_s": round(rate),
        "burst_records": size,
        "burst_rate_per_s": round(burst_rate),
        "burst_over_processing_rate": round(burst_rate / rate, 1),
        "rss_baseline_mib": round(baseline, 1),
        "rss_peak_mib": round(peak, 1),
        "rss_growth_mib": round(peak - baseline, 1),
        "drain_seconds_after_burst": round(drained, 1),
        "peak_consumer_lag": round(max(lags)),
        "sink_drain_seconds_after_processing": round(sink_drained, 1),
        "max_poll_records": 200,
        "stream_buffer": 1000,
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "sinks-burst.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(figures)
    assert burst_rate >= 9.5 * rate, figures  # ten times, give or take the last batch's delivery
    # bounded: the backlog (tens of thousands of records) stays in Kafka, not in the worker
    assert peak - baseline < 150, figures
    # the backlog was in Kafka, and the metric saw it: twenty times what the worker may hold (a fetch
    # of 200 records and a stream buffer of 1,000)
    assert max(lags) > 20 * (200 + 1000), figures
    wait_until(lambda: consumer_lag() == 0, 60, "consumer lag 0")


def test_influx_down_mid_stream_then_back(
    kafka_bootstrap: str, names: Names, worker_factory: Callable[..., Worker], sink_targets: SinkTargets
) -> None:
    worker = worker_factory(**sink_env(sink_targets))
    port = str(sink_targets.servers.influx.port)
    sensors = [f"i-{n}" for n in range(5)]
    start = (time.time() // 60) * 60 - 240
    first, second = readings(sensors, 20, start), readings(sensors, 20, start + 2.0)
    topic = names.topic("sensor-readings")

    def influx_total() -> int:
        try:
            return sum(int(p["count"]) for p in influx_points(sink_targets).values())
        except OSError:
            return -1

    asyncio.run(produce(kafka_bootstrap, topic, first, key=lambda v: v["sensor_id"]))
    wait_until(lambda: influx_total() == len(first), 120, "the first windows in InfluxDB")
    sink_targets.servers.cli("influx", "down", "--port", port)
    try:
        asyncio.run(produce(kafka_bootstrap, topic, second, key=lambda v: v["sensor_id"]))
        total = len(first) + len(second)
        # PostgreSQL goes on: one sink down never holds up the other or the detectors
        wait_until(lambda: windows_total(sink_targets.postgres_dsn) == total, 120, "PostgreSQL meanwhile")
        worker.wait_for_metric("streamapp_sink_retries_total", lambda v: v >= 2, 60, sink="influx")
    finally:
        sink_targets.servers.cli("influx", "up", "--port", port)
    wait_until(lambda: influx_total() == total, 120, "every window in InfluxDB after the outage")
    rows = pg_windows(sink_targets.postgres_dsn)
    assert set(influx_points(sink_targets)) == set(rows)


def test_rows_the_databases_refuse_are_dead_letters_and_the_rest_is_written(
    kafka_bootstrap: str, names: Names, worker_factory: Callable[..., Worker], sink_targets: SinkTargets
) -> None:
    worker = worker_factory(**sink_env(sink_targets))
    dsn = sink_targets.postgres_dsn
    alert = {"kind": "high_temperature", "ts": 1.0, "window_start": 0.0, "window_end": 60.0,
             "value": 120.0, "threshold": 100.0, "detail": "hot"}  # fmt: skip
    # one key: one partition, so the good alerts after the bad one are in the same batch, behind it
    alerts: list[dict[str, Any] | bytes] = [
        {**alert, "alert_id": "good-1", "key": "s1"},
        {**alert, "alert_id": "nul\x00id", "key": "s\x00"},
        {**alert, "alert_id": "good-2", "key": "s2"},
        b"\x00\x01 not json",
    ]
    hostile = ["a,b", "c d", "e=f", 'g"h', "i\\j", "k\\,l", "m\\ n=o", "é\t"]
    start = (time.time() // 60) * 60 - 600
    windows: list[dict[str, Any] | bytes] = [
        {"sensor_id": sensor, "start": start, "end": start + 60, "count": 1, "min": 1.0, "max": 1.0,
         "mean": 1.0}
        for sensor in ["nul\x00sensor", *hostile[:4], "new\nline", *hostile[4:]]
    ]  # fmt: skip
    asyncio.run(produce(kafka_bootstrap, names.topic("alerts"), alerts, key=lambda _: "k"))
    windows_topic = f"{names.app_id}-sensor-windows"
    asyncio.run(produce(kafka_bootstrap, windows_topic, windows, key=lambda _: "k"))

    def letters(records: list[Any]) -> dict[bytes, tuple[str, str, str]]:
        """value -> (source topic, source offset, reason)"""
        return {
            r.value: (h["x-source-topic"].decode(), h["x-source-offset"].decode(), h["x-error"].decode())
            for r, h in ((r, dict(r.headers)) for r in records)
        }

    dead = asyncio.run(
        read_until(kafka_bootstrap, names.topic("dead-letters"), lambda got: len(letters(got)) >= 4, 120)
    )
    reasons = letters(dead)
    alerts_topic = names.topic("alerts")
    nul_alert, nul_window, newline_window = (
        orjson.dumps(alerts[1]),
        orjson.dumps(windows[0]),
        orjson.dumps(windows[5]),
    )
    assert set(reasons) == {nul_alert, b"\x00\x01 not json", nul_window, newline_window}  # byte for byte
    assert reasons[nul_alert][:2] == (alerts_topic, "1")  # one partition: the good alerts around it
    assert reasons[nul_alert][2].startswith("postgres sink: the database refused the row: ")
    assert "0x00" in reasons[nul_alert][2]
    assert reasons[b"\x00\x01 not json"][::2] == (alerts_topic, "sink: alert record is not a JSON object")
    assert reasons[nul_window] == (windows_topic, "0", reasons[nul_window][2])
    assert "0x00" in reasons[nul_window][2]
    assert reasons[newline_window] == (
        windows_topic,
        "5",
        "influx sink: InfluxDB line protocol cannot carry a newline in a tag",
    )
    assert {r.key for r in dead if r.value != b"\x00\x01 not json"} == {b"k"}

    # the rows after the refused ones are written, the hostile ids exactly as they were
    wait_until(lambda: len(try_query(dsn, "SELECT 1 FROM alerts") or []) == 2, 60, "the good alerts")
    assert {r["alert_id"] for r in query(dsn, "SELECT alert_id FROM alerts")} == {"good-1", "good-2"}
    wait_until(lambda: len(pg_windows(dsn)) == len(hostile) + 1, 60, "the windows PostgreSQL takes")
    assert {sensor for sensor, _ in pg_windows(dsn)} == {*hostile, "new\nline"}
    wait_until(lambda: len(influx_points(sink_targets)) == len(hostile) + 1, 60, "the points InfluxDB takes")
    assert {sensor for sensor, _ in influx_points(sink_targets)} == {*hostile, "nul\x00sensor"}
    for sink in ("postgres", "influx"):
        worker.wait_for_metric("streamapp_sink_lag", lambda v: v == 0, 60, sink=sink)
    assert worker.metric("streamapp_sink_dead_letters_total", sink="postgres") == 3
    assert worker.metric("streamapp_sink_dead_letters_total", sink="influx") == 1
