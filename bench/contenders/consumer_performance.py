"""Contender: Kafka's Java ConsumerPerformance on the same topic, the broker's ceiling here."""

from __future__ import annotations

import csv
import io
import subprocess

from bench.data import Dataset
from bench.harness import Bench, Outcome
from streamapp.dev.kafka import fetch_kafka_jars


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
