"""`streamapp replay`: rebuild every table from the source topics into a fresh app id, with progress."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiohttp
import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from streamapp.dev.process import log_tail, stop_child
from streamapp.runtime.kafka_clients import client_kwargs
from streamapp.settings import PREFIX, Settings
from streamapp.sinks.influx import InfluxWriter
from streamapp.sinks.postgres import PostgresWriter

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_WORKER_FAILED",
    "Echo",
    "Progress",
    "ProgressMeter",
    "ReplayError",
    "ReplayOptions",
    "ReplayTopics",
    "app_topics",
    "check_new_app_id",
    "commit_start_offsets",
    "existing_partitions",
    "find_leftovers",
    "format_count",
    "held_settle_seconds",
    "measure",
    "old_topics_pattern",
    "parse_start_time",
    "pick_free_port",
    "run_replay",
    "sink_groups",
    "switch_over_hint",
]

Echo = Callable[[str], None]

#: exit codes of `streamapp replay` besides 0 (done) and 2 (refused)
EXIT_WORKER_FAILED = 1
EXIT_INTERRUPTED = 130

#: seconds over which the progress line's records/s is measured
RATE_WINDOW_SECONDS = 10.0

_EPOCH_SECONDS = re.compile(r"^\d+(\.\d+)?$")


class ReplayError(RuntimeError):
    """The replay cannot start or go on; the message (one line) says why and what to do."""


# -- what to replay -----------------------------------------------------------------------------
def parse_start_time(text: str) -> float:
    """Epoch seconds from ``--from``: epoch seconds, or ISO-8601 with an offset (``Z`` allowed)."""
    raw = text.strip()
    if _EPOCH_SECONDS.match(raw):
        return float(raw)
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise ReplayError(
            f"--from {text!r} is neither epoch seconds nor ISO-8601 (e.g. 2026-01-01T12:00:00+00:00)"
        ) from None
    if parsed.tzinfo is None:
        raise ReplayError(f"--from {text!r} has no UTC offset: add one, e.g. {raw}+00:00 or {raw}Z")
    return parsed.timestamp()


def check_new_app_id(new_id: str, settings: Settings) -> None:
    """Refuse the live app id: a replay never writes into the state it is meant to replace."""
    if new_id == settings.app_id:
        raise ReplayError(
            f"--app-id {new_id} is the live app id (STREAMAPP_APP_ID): a replay builds fresh state "
            f"under a new app id, e.g. --app-id {settings.app_id}-r1"
        )


@dataclass(frozen=True)
class ReplayTopics:
    """The topics of the app under the new app id."""

    #: input topics the app's agents read (shared by every app id)
    source: tuple[str, ...]
    #: by-entity topics of the new app id, written and read by its agents
    internal: tuple[str, ...]
    #: every topic that belongs to the new app id: internal, changelogs, faust's assignor topic
    owned: tuple[str, ...]


def app_topics(new_id: str) -> ReplayTopics:
    """The app's topics under ``new_id``, from the agents and tables the app modules declare.

    The app is imported in this process (it is never run here) under a placeholder app id that
    no topic prefix can clash with: the topic names that start with it are the app's own, the
    others are source topics. So this must run before anything else here imports
    :mod:`streamapp.app`. A new agent or table is picked up without changing this module.
    """
    placeholder = f"streamapp-replay-{uuid.uuid4().hex}"
    os.environ[f"{PREFIX}APP_ID"] = placeholder
    from streamapp.app import app, import_app_modules, settings
    from streamapp.runtime import topics as app_topic_module

    if settings.app_id != placeholder:
        raise ReplayError(f"the app was already imported here with app id {settings.app_id}")
    import_app_modules()
    names: set[str] = set()
    for agent in app.agents.values():
        names.update(getattr(agent.channel, "topics", ()))
    ours = f"{placeholder}-"
    # topics the app writes under its id but no agent reads (the sinks read <app id>-sensor-windows)
    outputs = sorted(
        name
        for topic in vars(app_topic_module).values()
        if isinstance(topic, faust.TopicT)
        for name in topic.topics
        if name.startswith(ours) and name not in names
    )

    def renamed(name: str) -> str:
        return f"{new_id}-{name.removeprefix(ours)}"

    internal = sorted(renamed(n) for n in names if n.startswith(ours))
    source = sorted(n for n in names if not n.startswith(ours))
    changelogs = sorted(renamed(t.changelog_topic.get_topic_name()) for t in app.tables.values())
    owned = [*internal, *(renamed(n) for n in outputs), *changelogs, f"{new_id}-__assignor-__leader"]
    clash = sorted(set(owned) & set(source))
    if clash:
        raise ReplayError(f"--app-id {new_id} would name its own topics like source topics ({clash[0]})")
    return ReplayTopics(source=tuple(source), internal=tuple(internal), owned=tuple(owned))


async def find_leftovers(admin: AIOKafkaAdminClient, new_id: str, owned: Iterable[str]) -> list[str]:
    """What makes ``new_id`` not fresh: committed offsets of its group, topics it owns."""
    found = []
    committed = await admin.list_consumer_group_offsets(new_id)
    if committed:
        found.append(f"consumer group {new_id} has committed offsets on {len(committed)} partitions")
    existing = set(await admin.list_topics())  # all topics: asking for named ones may create them
    taken = sorted(set(owned) & existing)
    if taken:
        found.append(f"its topics exist ({', '.join(taken[:3])}{', ...' if len(taken) > 3 else ''})")
    return found


async def _delete_topics(admin: AIOKafkaAdminClient, topics: list[str], within: float = 60.0) -> None:
    """Delete ``topics`` and wait until the broker no longer lists them."""
    if not topics:
        return
    await admin.delete_topics(topics)
    deadline = time.monotonic() + within
    while set(topics) & set(await admin.list_topics()):
        if time.monotonic() > deadline:
            raise ReplayError(f"topics {', '.join(topics)} were not deleted within {within:.0f} s")
        await asyncio.sleep(0.5)


async def existing_partitions(admin: AIOKafkaAdminClient, topics: Iterable[str]) -> list[TopicPartition]:
    """The partitions of those of ``topics`` that exist.

    Topics are looked up in the full listing first: asking the broker for a named topic that does
    not exist may create it (``auto.create.topics.enable``), with the wrong partition count.
    """
    listed = set(await admin.list_topics())
    present = [t for t in topics if t in listed]
    if not present:
        return []
    return [
        TopicPartition(meta["topic"], p["partition"])
        for meta in await admin.describe_topics(present)
        if not meta["error_code"]
        for p in sorted(meta["partitions"], key=lambda p: p["partition"])
    ]


async def commit_start_offsets(
    settings: Settings, new_id: str, parts: list[TopicPartition], start_ms: int | None
) -> dict[TopicPartition, tuple[int, int]]:
    """Commit where ``new_id`` starts on every source partition; return ``{tp: (start, end)}``.

    Start is the beginning of the partition, or with ``start_ms`` the first record whose record
    timestamp is at or after it (the end when there is none). End is the end offset now: what the
    replay must reach.
    """
    if not parts:
        return {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, group_id=new_id, enable_auto_commit=False,
        **client_kwargs(settings),
    )  # fmt: skip
    await consumer.start()
    try:
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        if start_ms is None:
            starts = await consumer.beginning_offsets(parts)
        else:
            found = await consumer.offsets_for_times({tp: start_ms for tp in parts})
            starts = {tp: ends[tp] if found[tp] is None else found[tp].offset for tp in parts}
        # aiokafka logs every retry of a refused commit as an error: the refusal is reported below
        coordinator_log = logging.getLogger("aiokafka.consumer.group_coordinator")
        level = coordinator_log.level
        coordinator_log.setLevel(logging.CRITICAL)
        try:
            await consumer.commit({tp: OffsetAndMetadata(starts[tp], "streamapp replay") for tp in parts})
        except KafkaError as exc:  # a group with members takes commits only from them
            raise ReplayError(
                f"could not commit the start offsets of group {new_id} ({type(exc).__name__}): "
                f"are workers of app id {new_id} running? stop them first"
            ) from exc
        finally:
            coordinator_log.setLevel(level)
        return {tp: (starts[tp], ends[tp]) for tp in parts}
    finally:
        await consumer.stop()


# -- progress -----------------------------------------------------------------------------------
def format_count(n: float) -> str:
    """``12,345``."""
    return f"{n:,.0f}"


@dataclass(frozen=True)
class Progress:
    """One measurement of how far the replay is.

    The work is two steps: every source record is routed to by-entity topics, and every
    by-entity record updates a table. Both count as records processed.
    """

    elapsed: float
    #: source records the new app id has consumed and committed since its start offsets
    source_done: int
    #: source records between the start offsets and the end offsets captured at start
    source_total: int
    #: by-entity records the new app id has committed
    internal_done: int
    #: records on the by-entity topics that the new app id has not yet committed
    internal_lag: int
    #: records processed (both steps) per second over the last few seconds
    rate: float
    worker_ready: bool

    @property
    def source_finished(self) -> bool:
        return self.source_done >= self.source_total

    @property
    def internal_total(self) -> int:
        """By-entity records the replay makes: exact once the source is done, else estimated.

        The estimate scales what the routed records made so far (a failed login makes two).
        """
        made = self.internal_done + self.internal_lag
        if self.source_finished:
            return made
        if not self.source_done:
            return self.source_total
        return max(made, round(made * self.source_total / self.source_done))

    @property
    def percent(self) -> float:
        total = self.source_total + self.internal_total
        return 100.0 if not total else 100.0 * (self.source_done + self.internal_done) / total

    @property
    def eta(self) -> float | None:
        """Seconds until caught up at the current rate (None: not known yet)."""
        remaining = self.source_total - self.source_done + self.internal_total - self.internal_done
        if remaining <= 0:
            return 0.0
        return remaining / self.rate if self.rate > 0 else None

    @property
    def caught_up(self) -> bool:
        """Source topics at the end offsets captured at start, nothing left on by-entity topics."""
        return self.worker_ready and self.source_finished and self.internal_lag == 0

    def describe(self) -> str:
        """The progress line."""
        eta = self.eta
        estimated = "" if self.source_finished else "~"
        line = (
            f"replay {self.percent:5.1f}%"
            f"  source {format_count(self.source_done)}/{format_count(self.source_total)}"
            f"  by-entity {format_count(self.internal_done)}/{estimated}{format_count(self.internal_total)}"
            f"  {format_count(self.rate)} records/s"
            f"  ETA {'?' if eta is None else f'{eta:.0f} s'}  {self.elapsed:.0f} s"
        )
        return line if self.worker_ready else f"{line}  (worker starting)"


class ProgressMeter:
    """Turns measurements into :class:`Progress`, with records/s over a sliding window."""

    def __init__(self, source_total: int, started: float, window: float = RATE_WINDOW_SECONDS) -> None:
        self.source_total = source_total
        self.started = started
        self.window = window
        #: when the worker was first seen ready (None: not yet)
        self.ready_at: float | None = None
        self._samples: deque[tuple[float, int]] = deque()

    @property
    def startup_seconds(self) -> float | None:
        """Seconds from the start until the worker was ready (recovered, partitions assigned)."""
        return None if self.ready_at is None else self.ready_at - self.started

    def update(
        self, now: float, source_done: int, internal_done: int, internal_lag: int, worker_ready: bool
    ) -> Progress:
        if worker_ready and self.ready_at is None:
            self.ready_at = now
        rate = 0.0
        processed = source_done + internal_done
        if worker_ready:
            self._samples.append((now, processed))
            while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
                self._samples.popleft()
            first_at, first_processed = self._samples[0]
            rate = (processed - first_processed) / (now - first_at) if now > first_at else 0.0
        else:
            self._samples.clear()  # a worker that is starting up says nothing about the speed
        return Progress(
            elapsed=now - self.started,
            source_done=source_done,
            source_total=self.source_total,
            internal_done=internal_done,
            internal_lag=internal_lag,
            rate=max(rate, 0.0),
            worker_ready=worker_ready,
        )


async def measure(
    admin: AIOKafkaAdminClient,
    offsets: AIOKafkaConsumer,
    new_id: str,
    sources: Mapping[TopicPartition, tuple[int, int]],
    internal_topics: Iterable[str],
    internal_parts: dict[str, list[TopicPartition]],
) -> tuple[int, int, int]:
    """``(source_done, internal_done, internal_lag)`` from the group's committed offsets.

    ``internal_parts`` caches the partitions of by-entity topics (created by the worker after it
    starts); topics are looked up in the full listing, never by name, which could create them.
    """
    committed = {tp: meta.offset for tp, meta in (await admin.list_consumer_group_offsets(new_id)).items()}
    source_done = sum(
        min(max(committed.get(tp, start) - start, 0), end - start) for tp, (start, end) in sources.items()
    )
    missing = [t for t in internal_topics if t not in internal_parts]
    if missing:
        for tp in await existing_partitions(admin, missing):
            internal_parts.setdefault(tp.topic, []).append(tp)
    parts = [tp for tps in internal_parts.values() for tp in tps]
    ends = await offsets.end_offsets(parts) if parts else {}
    internal_done = sum(max(committed.get(tp, 0), 0) for tp in parts)
    internal_lag = sum(max(ends[tp] - max(committed.get(tp, 0), 0), 0) for tp in parts)
    return source_done, internal_done, internal_lag


# -- the run ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplayOptions:
    """What `streamapp replay` was asked to do."""

    app_id: str
    data_dir: Path
    web_port: int
    start_time: float | None = None
    publish_alerts: bool = False
    serve: bool = False
    force: bool = False
    interval: float = 1.5
    #: STREAMAPP_TOPIC_PREFIX of the worker (replay --from-archive: the staging copies)
    topic_prefix: str | None = None


def pick_free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for the replay worker's web API)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def old_topics_pattern(live_id: str, new_id: str, topics: ReplayTopics) -> str:
    """A regular expression (Kafka's tools take one) matching exactly the live app id's own topics.

    Never the new app id's, nor source topics, even when one app id is a prefix of the other.
    """
    suffixes = [name.removeprefix(f"{new_id}-") for name in topics.owned]
    return f"{_literal(live_id)}-({'|'.join(_literal(s) for s in suffixes)})"


def _literal(text: str) -> str:
    """``text`` as a regular expression that matches only itself (Java and Python alike)."""
    return "".join(c if c.isalnum() or c in "_-" else f"\\{c}" for c in text)


def sink_groups(app_id: str) -> list[str]:
    """The consumer groups of the app id's sinks (streamapp.sinks: ``<app id>-sink-<name>``)."""
    return [f"{app_id}-sink-{writer.name}" for writer in (PostgresWriter, InfluxWriter)]


def switch_over_hint(settings: Settings, new_id: str, topics: ReplayTopics) -> str:
    """How to move readers from the live app id to the replayed one, step by step."""
    live_id = settings.app_id
    bootstrap = ",".join(settings.bootstrap_servers)
    return "\n".join(
        [
            "to switch over:",
            f"  1. run workers with STREAMAPP_APP_ID={new_id} beside the {live_id} workers: they recover "
            "the rebuilt state from its changelog topics, then follow new records",
            "  2. once their streamapp_consumer_lag is about 0, point readers and dashboards at them",
            f"  3. stop the {live_id} workers",
            f"  4. delete what {live_id} leaves behind:",
            f"     kafka-topics.sh --bootstrap-server {bootstrap} --delete --topic "
            f"'{old_topics_pattern(live_id, new_id, topics)}'",
            f"     kafka-consumer-groups.sh --bootstrap-server {bootstrap} --delete --group {live_id}"
            + "".join(f" --group {group}" for group in sink_groups(live_id)),
            "     (the -sink- groups exist only where its PostgreSQL or InfluxDB sink ran)",
        ]
    )


#: rules that hold events until the key's event clock passes them by the grace, or the key has
#: been quiet for the grace in wall time (agents.base.HeldKeys sends it a tick record then)
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


def _held_settle_deadline(settings: Settings, echo: Echo) -> float | None:
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


def _spawn_worker(options: ReplayOptions, log_path: Path) -> subprocess.Popen[bytes]:
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


async def _exit_code(proc: subprocess.Popen[bytes], poll_every: float = 0.5) -> int:
    """Wait (without blocking the loop) until ``proc`` exits; its exit code."""
    while True:
        code = proc.poll()
        if code is not None:
            return code
        await asyncio.sleep(poll_every)


async def _worker_ready(http: aiohttp.ClientSession, port: int) -> bool:
    try:
        async with http.get(f"http://127.0.0.1:{port}/ready", timeout=aiohttp.ClientTimeout(total=2)) as r:
            return r.status == 200
    except (TimeoutError, aiohttp.ClientError):
        return False


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
            await _delete_topics(admin, doomed)
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
        worker = _spawn_worker(options, log_path)
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
                    ready = await _worker_ready(http, options.web_port)
                    source_done, internal_done, lag = await measure(
                        admin, offsets, options.app_id, sources, topics.internal, internal_parts
                    )
                    progress = meter.update(time.monotonic(), source_done, internal_done, lag, ready)
                    echo(progress.describe())
                    if progress.caught_up:
                        if settle_until is None:
                            settle_until = _held_settle_deadline(settings, echo)
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
            code = await _exit_code(worker)
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
