"""`streamapp replay`'s run: prepare the new app id, run the worker, show progress, stop it."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
from datetime import datetime

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from streamapp.dev.process import log_tail, stop_child
from streamapp.ops.replay.offsets import (
    commit_start_offsets,
    delete_topics,
    existing_partitions,
    find_leftovers,
)
from streamapp.ops.replay.plan import Echo, ReplayError, ReplayOptions, ReplayTopics, check_new_app_id
from streamapp.ops.replay.progress import ProgressMeter, format_count, measure
from streamapp.ops.replay.switch_over import switch_over_hint
from streamapp.ops.replay.worker import exit_code, held_settle_deadline, spawn_worker, worker_ready
from streamapp.runtime.kafka_clients import client_kwargs
from streamapp.settings import Settings

__all__ = ["EXIT_INTERRUPTED", "EXIT_WORKER_FAILED", "run_replay"]

#: exit codes of `streamapp replay` besides 0 (done) and 2 (refused)
EXIT_WORKER_FAILED = 1
EXIT_INTERRUPTED = 130


async def _prepare(
    settings: Settings, options: ReplayOptions, topics: ReplayTopics, echo: Echo
) -> dict[TopicPartition, tuple[int, int]]:
    """Check that the app id is fresh (or clear it with --force); commit the start offsets."""
    try:
        return await _prepare_on_broker(settings, options, topics, echo)
    except (KafkaError, OSError) as exc:
        raise ReplayError(f"the broker {settings.broker} did not answer as expected: {exc!r}") from exc


async def _prepare_on_broker(
    settings: Settings, options: ReplayOptions, topics: ReplayTopics, echo: Echo
) -> dict[TopicPartition, tuple[int, int]]:
    start_ms = None if options.start_time is None else int(options.start_time * 1000)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, **client_kwargs(settings))
    await admin.start()
    try:
        leftovers = await find_leftovers(admin, options.app_id, topics.owned)
        if leftovers and not options.force:
            raise ReplayError(
                f"app id {options.app_id} is not fresh: {'; '.join(leftovers)}; "
                "choose a new --app-id, or --force to delete its topics and start over"
            )
        # source topics that do not exist yet have nothing to replay
        parts = await existing_partitions(admin, topics.source)
        # committing first also makes sure no worker of the app id runs: its group would refuse
        starts = await commit_start_offsets(settings, options.app_id, parts, start_ms)
        if leftovers:
            existing = set(await admin.list_topics())
            doomed = [t for t in topics.owned if t in existing]
            echo(f"--force: deleting {len(doomed)} topics of app id {options.app_id}")
            await delete_topics(admin, doomed)
        return starts
    finally:
        await admin.close()


async def _follow(
    settings: Settings,
    options: ReplayOptions,
    topics: ReplayTopics,
    echo: Echo,
    workers: list[subprocess.Popen[bytes]],
) -> int:
    """Prepare, start the worker, show progress until caught up (and serve); the exit code."""
    main_task = asyncio.current_task()
    assert main_task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main_task.cancel)
    done = False
    try:
        sources = await _prepare(settings, options, topics, echo)
        total = sum(end - start for start, end in sources.values())
        what = (
            "from the beginning"
            if options.start_time is None
            else f"from {datetime.fromtimestamp(options.start_time).astimezone().isoformat()}"
        )
        alerts = "published again" if options.publish_alerts else "not published"
        echo(
            f"replaying {format_count(total)} records of {len(topics.source)} source topics {what} "
            f"into app id {options.app_id} (alerts {alerts})"
        )
        options.data_dir.mkdir(parents=True, exist_ok=True)
        log_path = options.data_dir / "worker.log"
        started = time.monotonic()
        worker = spawn_worker(options, log_path)
        workers.append(worker)
        echo(f"worker started (pid {worker.pid}, web http://127.0.0.1:{options.web_port}, log {log_path})")
        meter = ProgressMeter(total, started)
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, **client_kwargs(settings))
        offsets = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False, **client_kwargs(settings)
        )
        await admin.start()
        await offsets.start()
        internal_parts: dict[str, list[TopicPartition]] = {}
        settle_until: float | None = None
        try:
            async with aiohttp.ClientSession() as http:
                while True:
                    if worker.poll() is not None:
                        echo(f"streamapp: error: the replay worker exited with {worker.returncode}:")
                        echo(log_tail(log_path, 15))
                        return EXIT_WORKER_FAILED
                    ready = await worker_ready(http, options.web_port)
                    source_done, internal_done, lag = await measure(
                        admin, offsets, options.app_id, sources, topics.internal, internal_parts
                    )
                    progress = meter.update(time.monotonic(), source_done, internal_done, lag, ready)
                    echo(progress.describe())
                    if progress.caught_up:
                        if settle_until is None:
                            settle_until = held_settle_deadline(settings, echo)
                        if settle_until is None or time.monotonic() >= settle_until:
                            break
                    await asyncio.sleep(options.interval)
        finally:
            await offsets.stop()
            await admin.close()
        seconds = time.monotonic() - started
        startup = meter.startup_seconds or 0.0
        running = seconds - startup
        done = True
        echo(
            f"replay done: {format_count(total)} source records ({format_count(progress.internal_done)} "
            f"by-entity) in {seconds:.1f} s, {format_count(total / seconds if seconds else 0)} records/s "
            f"({startup:.1f} s worker start-up, then {format_count(total / running if running > 0 else 0)} "
            f"records/s); the state of app id {options.app_id} is in its changelog topics"
        )
        echo(switch_over_hint(settings, options.app_id, topics))
        if options.serve:
            echo(
                f"serving app id {options.app_id} at http://127.0.0.1:{options.web_port} "
                "(it keeps following new records); Ctrl-C stops it"
            )
            code = await exit_code(worker)
            echo(f"streamapp: error: the replay worker exited with {code}:")
            echo(log_tail(log_path, 15))
            return EXIT_WORKER_FAILED
        return 0
    except asyncio.CancelledError:
        if done:
            return 0
        echo(
            f"replay interrupted: app id {options.app_id} holds partial state; "
            "run it again with --force to start over"
        )
        return EXIT_INTERRUPTED
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run_replay(settings: Settings, options: ReplayOptions, topics: ReplayTopics, echo: Echo) -> int:
    """Replay into ``options.app_id``; stop every process it started; return the exit code.

    ``settings`` are the live settings (their app id is the one being replaced). Raises
    :class:`ReplayError` when the replay cannot start.
    """
    check_new_app_id(options.app_id, settings)
    if options.data_dir.exists() and any(options.data_dir.iterdir()):
        if not options.force:
            raise ReplayError(
                f"data dir {options.data_dir} is not empty: a replay builds fresh state; "
                "choose another --data-dir, or --force to empty its tables"
            )
        shutil.rmtree(options.data_dir / "tables", ignore_errors=True)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        return asyncio.run(_follow(settings, options, topics, echo, workers))
    finally:
        # a second Ctrl-C (or a SIGTERM) while the worker shuts down must not leave it orphaned
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for worker in workers:
                if worker.poll() is None:
                    echo(f"stopping the replay worker (pid {worker.pid}) ...")
                stop_child(worker)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if workers:
            echo("replay stopped: no process left running")
