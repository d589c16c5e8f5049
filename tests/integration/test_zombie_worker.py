"""A worker paused past the session timeout (SIGSTOP) while bursts flow to its partitions, then
resumed (SIGCONT): its partitions have moved, and what it computed from its stale state must not
overwrite the newer counts of the worker that took them (docs/operations.md, 'Soak').

On a broker of the test's own; ZOMBIE_PAUSES (default 3) pauses, alternating the two workers."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from tests.integration.conftest import Worker
from tests.integration.load import PER_IP, LoginLoad, bursts_not_counted

pytestmark = pytest.mark.integration

SESSION_TIMEOUT = 10.0  # the workers' broker_session_timeout
PAUSE_SECONDS = SESSION_TIMEOUT + 4  # past it: the paused worker's partitions move to the other
AFTER_RESUME_SECONDS = 16  # the resumed worker rejoins and takes partitions back (and restores them)


async def _pause(worker: Worker) -> None:
    assert worker.proc is not None and worker.proc.poll() is None
    os.killpg(worker.proc.pid, signal.SIGSTOP)
    await asyncio.sleep(PAUSE_SECONDS)
    os.killpg(worker.proc.pid, signal.SIGCONT)


async def test_a_resumed_zombie_worker_overwrites_no_newer_count(names, worker_factory, private_broker):
    pauses = int(os.environ.get("ZOMBIE_PAUSES", "3"))
    settings = {"STREAMAPP_BROKER": f"kafka://{private_broker.bootstrap}", "STREAMAPP_RULES": "brute_force"}
    workers = [worker_factory(**settings), worker_factory(**settings)]
    # 12 new IPs every 0.5 s (about 380 events/s): the paused worker is often in the middle of a
    # batch, and has records fetched but not handled yet, when it stops
    load = LoginLoad(private_broker.bootstrap, names.topic("logins"), ips_per_round=12).start()
    try:
        await asyncio.sleep(6)
        for n in range(pauses):
            await _pause(workers[(n + 1) % 2])
            await asyncio.sleep(AFTER_RESUME_SECONDS)
    finally:
        await load.stop()
    assert load.ips, "no burst was produced"

    # every burst counted exactly once, asked of one worker (it forwards to the key's owner)
    pending = await bursts_not_counted(workers[0], list(load.ips), within=90)
    for worker in workers:
        assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
    under = sorted(ip for ip, count in pending.items() if 0 <= count < PER_IP)
    assert not pending, (
        f"{len(pending)} of {len(load.ips)} bursts not counted exactly ({len(under)} under), "
        f"e.g. {list(pending.items())[:6]}"
    )
