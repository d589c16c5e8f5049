"""`streamapp demo`: broker, worker and traffic started together, alerts shown live, all stopped on Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer

from streamapp.dev.kafka import DevBroker, streamapp_home
from streamapp.dev.process import stop_child
from streamapp.kafka_clients import client_kwargs
from streamapp.settings import Settings

__all__ = ["format_alert", "run_demo"]

Echo = Callable[[str], None]


def format_alert(alert: dict) -> str:
    """One terminal line per alert."""
    at = datetime.fromtimestamp(alert["ts"]).strftime("%H:%M:%S")
    return f"{at}  {alert['kind']:<20} {alert['key']:<18} {alert['detail']}"


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        # own session: the terminal's Ctrl-C reaches only the demo, which stops children in order
        return subprocess.Popen(
            [sys.executable, "-m", "streamapp.cli", *args],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )  # fmt: skip


async def _show_alerts(settings: Settings, echo: Echo, until: float | None) -> None:
    consumer = AIOKafkaConsumer(
        settings.topic("alerts"), bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="latest", enable_auto_commit=False, metadata_max_age_ms=2000,
        **client_kwargs(settings),
    )  # fmt: skip
    await consumer.start()
    try:
        while until is None or time.monotonic() < until:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    echo(format_alert(orjson.loads(record.value)))
    finally:
        await consumer.stop()


def run_demo(settings: Settings, echo: Echo, rate: int = 200, duration: float | None = None) -> None:
    """Run the demo until Ctrl-C (or ``duration`` seconds); leave no process behind."""
    home = streamapp_home() / "demo"
    home.mkdir(parents=True, exist_ok=True)
    broker = DevBroker()
    use_dev_broker = settings.bootstrap_servers == [broker.bootstrap]
    started_broker = use_dev_broker and not broker.status().running
    if use_dev_broker:
        broker.up(progress=echo)
    env = {
        **os.environ,
        "STREAMAPP_DATA_DIR": str(settings.data_dir if "STREAMAPP_DATA_DIR" in os.environ else home / "data"),
    }
    children: list[subprocess.Popen[bytes]] = []

    def on_term(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        worker = _spawn(["worker"], home / "worker.log", env)
        children.append(worker)
        echo(f"worker started (pid {worker.pid}, web http://127.0.0.1:{settings.web_port})")
        generator = _spawn(["generate", "--rate", str(rate)], home / "generator.log", env)
        children.append(generator)
        echo(f"traffic generator started (pid {generator.pid}, {rate} events/s); logs in {home}")
        echo("alerts appear below as the worker detects them; Ctrl-C stops everything")
        until = time.monotonic() + duration if duration else None
        asyncio.run(_show_alerts(settings, echo, until))
    except KeyboardInterrupt:
        echo("stopping ...")
    finally:
        for child in reversed(children):
            stop_child(child, timeout=20.0)
        if started_broker:
            broker.down(progress=echo)
        signal.signal(signal.SIGTERM, previous)
        kept = "" if started_broker or not use_dev_broker else " (the broker was already up and stays up)"
        echo(f"demo stopped: no process left running{kept}")
