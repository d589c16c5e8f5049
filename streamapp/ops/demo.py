"""`streamapp demo`: broker, worker and traffic started together, alerts shown live, all stopped on Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer

from streamapp.dev.kafka import DevBroker, streamapp_home
from streamapp.dev.process import log_tail, stop_child
from streamapp.runtime.kafka_clients import client_kwargs
from streamapp.settings import Settings

__all__ = ["ChildExited", "format_alert", "library_logs_to", "run_demo"]

Echo = Callable[[str], None]


def format_alert(alert: dict) -> str:
    """One terminal line per alert."""
    at = datetime.fromtimestamp(alert["ts"]).strftime("%H:%M:%S")
    return f"{at}  {alert['kind']:<20} {alert['key']:<18} {alert['detail']}"


@contextlib.contextmanager
def library_logs_to(log: Path) -> Iterator[None]:
    """Send this process's log records to ``log`` instead of the terminal, for the ``with`` block.

    The demo's own Kafka clients log while a fresh broker elects leaders and creates topics
    (aiokafka's "Topic alerts not found in cluster metadata", ``NotLeaderForPartition``): without a
    handler Python prints every warning on stderr, between the alerts. The children already write
    to their own log files; this is the demo's.
    """
    root = logging.getLogger()
    handler = logging.FileHandler(log, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers = [handler]  # only the file: a stderr handler set up before would print them again
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.handlers, root.level = saved_handlers, saved_level
        handler.close()


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        # own session: the terminal's Ctrl-C reaches only the demo, which stops children in order
        return subprocess.Popen(
            [sys.executable, "-m", "streamapp.cli", *args],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )  # fmt: skip


class ChildExited(Exception):
    """A process the demo started (worker or generator) stopped on its own."""

    def __init__(self, name: str, code: int | None, log: Path) -> None:
        super().__init__(f"the {name} exited (code {code})")
        self.name, self.code, self.log = name, code, log


@dataclass
class _Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


def _check_children(children: list[_Child]) -> None:
    for child in children:
        if child.proc.poll() is not None:
            raise ChildExited(child.name, child.proc.returncode, child.log)


async def _page_is_up(url: str) -> bool:
    try:
        timeout = aiohttp.ClientTimeout(total=1.0)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(f"{url}ready") as resp:
            return resp.status == 200
    except (TimeoutError, aiohttp.ClientError, OSError):
        return False


async def _show_alerts(
    settings: Settings, echo: Echo, until: float | None, children: list[_Child], page: str
) -> None:
    """Print alerts as they come; raise :class:`ChildExited` as soon as a child stops."""
    consumer = AIOKafkaConsumer(
        settings.topic("alerts"), bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="latest", enable_auto_commit=False, metadata_max_age_ms=2000,
        **client_kwargs(settings),
    )  # fmt: skip
    start = asyncio.ensure_future(consumer.start())
    while not start.done():  # the broker may take a while: keep an eye on the children meanwhile
        _check_children(children)
        await asyncio.wait([start], timeout=0.5)
    start.result()
    page_up, next_look = False, 0.0
    try:
        while until is None or time.monotonic() < until:
            _check_children(children)
            if not page_up and time.monotonic() >= next_look:
                next_look = time.monotonic() + 1.0
                if page_up := await _page_is_up(page):
                    echo(f"the live page is up: {page}")
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    echo(format_alert(orjson.loads(record.value)))
    finally:
        await consumer.stop()


def run_demo(settings: Settings, echo: Echo, rate: int = 200, duration: float | None = None) -> int:
    """Run the demo until Ctrl-C (or ``duration`` seconds); leave no process behind.

    Returns the exit code: 0 when stopped by the user or the duration, 1 when a child stopped on its own.
    """
    home = streamapp_home() / "demo"
    home.mkdir(parents=True, exist_ok=True)
    # the terminal shows the alerts and the demo's own lines; library logs go to demo.log
    with library_logs_to(home / "demo.log"):
        return _run(settings, echo, rate, duration, home)


def _run(settings: Settings, echo: Echo, rate: int, duration: float | None, home: Path) -> int:
    broker = DevBroker()
    use_dev_broker = settings.bootstrap_servers == [broker.bootstrap]
    started_broker = use_dev_broker and not broker.status().running
    if use_dev_broker:
        broker.up(progress=echo)
    env = {
        **os.environ,
        "STREAMAPP_DATA_DIR": str(settings.data_dir if "STREAMAPP_DATA_DIR" in os.environ else home / "data"),
    }
    children: list[_Child] = []
    page = f"http://127.0.0.1:{settings.web_port}/"
    code = 0

    def on_term(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C stops the demo even when it was started with SIGINT ignored (a background job of a
    # non-interactive shell inherits that); asyncio.run then turns it into a cancellation
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for name, args, log in (
            ("worker", ["worker"], home / "worker.log"),
            ("traffic generator", ["generate", "--rate", str(rate)], home / "generator.log"),
        ):
            children.append(_Child(name, _spawn(args, log, env), log))
        worker, generator = children
        echo(f"worker started (pid {worker.proc.pid}, web http://127.0.0.1:{settings.web_port})")
        echo(
            f"traffic generator started (pid {generator.proc.pid}, {rate} events/s); "
            f"logs in {home} (worker.log, generator.log, demo.log)"
        )
        token = "#token=<STREAMAPP_WEB_TOKEN>" if settings.web_token else ""
        echo(f"open the live page: {page}{token}  (charts of alerts, sensors and prices)")
        echo("alerts appear below as the worker detects them; Ctrl-C stops everything")
        until = time.monotonic() + duration if duration else None
        asyncio.run(_show_alerts(settings, echo, until, children, page))
    except KeyboardInterrupt:
        echo("stopping ...")
    except ChildExited as exc:
        code = 1
        echo(f"streamapp demo: {exc}; the last lines of its log ({exc.log}):")
        for line in log_tail(exc.log, 20).splitlines():
            echo(f"  | {line}")
        echo("stopping the rest ...")
    finally:
        for child in reversed(children):
            stop_child(child.proc, timeout=20.0)
        if started_broker:
            broker.down(progress=echo)
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        kept = "" if started_broker or not use_dev_broker else " (the broker was already up and stays up)"
        echo(f"demo stopped: no process left running{kept}")
    return code
