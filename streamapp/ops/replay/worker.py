"""The replay worker: a `streamapp worker` process under the new app id, and how long it must run."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from streamapp.ops.replay.plan import Echo, ReplayOptions
from streamapp.settings import PREFIX, Settings

__all__ = ["held_settle_seconds", "pick_free_port"]


def pick_free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for the replay worker's web API)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: rules that hold events until the key's event clock passes them by the grace, or the key has
#: been quiet for the grace in wall time (agents.run_detections sends it a tick record then)
HELD_RULES = frozenset({"amount_spike", "temperature_anomaly"})
#: seconds past the grace for the last tick to be sent (the tick task looks once a second)
TICK_MARGIN_SECONDS = 5.0


def held_settle_seconds(settings: Settings) -> float:
    """How long after catching up the replay worker must run for every held event to be judged.

    At the end of the source topics the newest events of each key are still held by the rules
    that hold (their key's clock never passes them): the replay worker judges them once the key
    has been quiet for the grace. Stopping it before would lose the alerts the live run gave.
    """
    if not settings.rules & HELD_RULES or settings.grace_seconds <= 0:
        return 0.0
    return settings.grace_seconds + TICK_MARGIN_SECONDS


def held_settle_deadline(settings: Settings, echo: Echo) -> float | None:
    """When the replay may stop, once caught up (None: at once): see :func:`held_settle_seconds`."""
    seconds = held_settle_seconds(settings)
    if not seconds:
        return None
    echo(
        f"caught up; waiting {seconds:.0f} s ({PREFIX}GRACE_SECONDS={settings.grace_seconds:g} and "
        f"{TICK_MARGIN_SECONDS:g} s) for the events held by {', '.join(sorted(settings.rules & HELD_RULES))} "
        "to be judged"
    )
    return time.monotonic() + seconds


def spawn_worker(options: ReplayOptions, log_path: Path) -> subprocess.Popen[bytes]:
    """Start `streamapp worker` under the new app id, its output appended to ``log_path``."""
    env = {
        **os.environ,
        f"{PREFIX}APP_ID": options.app_id,
        f"{PREFIX}DATA_DIR": str(options.data_dir),
        f"{PREFIX}WEB_PORT": str(options.web_port),
        f"{PREFIX}PUBLISH_ALERTS": "true" if options.publish_alerts else "false",
    }
    if options.topic_prefix is not None:
        env[f"{PREFIX}TOPIC_PREFIX"] = options.topic_prefix
    with open(log_path, "ab") as log:
        # own session: the terminal's Ctrl-C reaches only the replay, which stops the worker
        return subprocess.Popen(
            [sys.executable, "-m", "streamapp.cli", "worker"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )  # fmt: skip


async def exit_code(proc: subprocess.Popen[bytes], poll_every: float = 0.5) -> int:
    """Wait (without blocking the loop) until ``proc`` exits; its exit code."""
    while True:
        code = proc.poll()
        if code is not None:
            return code
        await asyncio.sleep(poll_every)


async def worker_ready(http: aiohttp.ClientSession, port: int) -> bool:
    """Whether the worker on ``port`` answers its /ready (recovered, partitions assigned)."""
    try:
        async with http.get(f"http://127.0.0.1:{port}/ready", timeout=aiohttp.ClientTimeout(total=2)) as r:
            return r.status == 200
    except (TimeoutError, aiohttp.ClientError):
        return False
