"""Integration fixtures: unique names per test and real worker processes on the real broker."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streamapp.dev.influx import DevInflux
from streamapp.dev.kafka import KAFKA_VERSION, DevBroker, fetch_kafka_jars
from streamapp.dev.kafka_cluster import DevCluster
from streamapp.dev.postgres import DevPostgres

__all__ = ["ClusterUnderTest", "Names", "SinkServers", "SinkTargets", "Worker"]


@dataclass(frozen=True)
class Names:
    """Unique app id and topic prefix for one test: tests never see each other's records."""

    app_id: str
    prefix: str

    def topic(self, name: str) -> str:
        return f"{self.prefix}{name}"


@pytest.fixture
def names(kafka_bootstrap: str) -> Iterator[Names]:
    """Unique names for one test; its topics are deleted afterwards (a broker holding thousands
    of leftover test partitions runs out of heap)."""
    tag = uuid.uuid4().hex[:10]
    yield Names(app_id=f"t{tag}", prefix=f"t{tag}-")
    asyncio.run(_delete_topics_starting_with(kafka_bootstrap, f"t{tag}"))


async def _delete_topics_starting_with(bootstrap: str, prefix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=60000)
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Worker:
    """A `streamapp worker` process with its own data dir, web port and log file."""

    env: dict[str, str]
    data_dir: Path
    log_path: Path
    web_port: int
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = field(default=0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self) -> Worker:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamapp.cli", "worker"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        return self

    def detections(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``streamapp detections ARGS`` with this worker's settings, as a user runs it beside the worker."""
        root = Path(__file__).resolve().parents[2]
        env = {**self.env, "PYTHONPATH": os.environ.get("PYTHONPATH", str(root))}
        return subprocess.run(
            [sys.executable, "-m", "streamapp.cli", "detections", *args],
            env=env, capture_output=True, text=True, timeout=120, cwd=root,
        )  # fmt: skip

    def restart(self) -> Worker:
        """Start again with the same data dir, web port and settings (after stop or kill)."""
        self.stop()
        self.restarts += 1
        return self.start()

    def kill(self) -> None:
        """``kill -9``: no shutdown, no flush, no commit."""
        self.stop(signal.SIGKILL)

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                return exc.code, json.loads(body)
            except ValueError:
                return exc.code, {"raw": body.decode(errors="replace")}

    def wait_ready(self, timeout: float = 90.0) -> Worker:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.get("/ready", timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"worker not ready in {timeout} s:\n{self.log_tail()}")

    def wait_for(self, path: str, check: Callable[[int, dict], bool], timeout: float = 60.0) -> dict:
        """Poll a web view until ``check(status, body)`` holds; return the last body."""
        deadline = time.monotonic() + timeout
        status, body = 0, {}
        while time.monotonic() < deadline:
            try:
                status, body = self.get(path)
                if check(status, body):
                    return body
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"GET {path} never satisfied the check; last {status} {body}")

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample on ``/metrics`` (0 when absent)."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
        selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
        pattern = rf"^{re.escape(name)}(?:\{{{re.escape(selector)}\}})? (\S+)$"
        match = re.search(pattern, text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    def wait_for_metric(
        self, name: str, check: Callable[[float], bool], timeout: float = 30.0, **labels: str
    ) -> float:
        deadline = time.monotonic() + timeout
        value = self.metric(name, **labels)
        while not check(value):
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}{labels} = {value} never satisfied the check")
            time.sleep(0.3)
            value = self.metric(name, **labels)
        return value

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


@pytest.fixture
def worker_factory(kafka_bootstrap: str, names: Names, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start workers of this test's app; every one is stopped at teardown."""
    started: list[Worker] = []

    def start(ready: bool = True, **overrides: str) -> Worker:
        n = len(started)
        port = free_port()
        data_dir = tmp_path / f"worker{n}"
        env = {
            **os.environ,
            "STREAMAPP_BROKER": f"kafka://{kafka_bootstrap}",
            "STREAMAPP_APP_ID": names.app_id,
            "STREAMAPP_TOPIC_PREFIX": names.prefix,
            "STREAMAPP_DATA_DIR": str(data_dir),
            "STREAMAPP_WEB_PORT": str(port),
            "STREAMAPP_PARTITIONS": "4",
            **overrides,
        }
        worker = Worker(env=env, data_dir=data_dir, log_path=tmp_path / f"worker{n}.log", web_port=port)
        started.append(worker)
        worker.start()
        return worker.wait_ready() if ready else worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[DevBroker]:
    """A broker of this test's own, on free ports, for tests that stop and start the broker.

    It reuses the jars already fetched for the session broker: nothing is downloaded again.
    """
    real_libs = fetch_kafka_jars()
    home = tmp_path / "broker-home"
    version_dir = home / "kafka" / KAFKA_VERSION
    version_dir.mkdir(parents=True)
    (version_dir / "libs").symlink_to(real_libs, target_is_directory=True)
    broker = DevBroker(home=home, port=free_port(), controller_port=free_port())
    broker.up()
    yield broker
    broker.down()


def _free_port_run(count: int) -> int:
    """The first of ``count`` consecutive free ports (the cluster's nodes take port + 2i), below
    the kernel's ephemeral range: a port in it can be taken by any outgoing connection meanwhile."""
    import random

    for _ in range(200):
        base = random.randrange(20000, 32000)
        if base + count < 65535 and all(
            not _listening(port) and _bindable(port) for port in range(base, base + count)
        ):
            return base
    raise AssertionError(f"no {count} consecutive free ports found")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass(frozen=True)
class ClusterUnderTest:
    """The session's three-node cluster (started by `streamapp kafka up --brokers 3`) and its CLI."""

    cluster: DevCluster
    home: Path
    port: int

    @property
    def bootstrap(self) -> str:
        return self.cluster.bootstrap

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``streamapp kafka ARGS --brokers 3 --port P --controller-port P+1`` with this home."""
        env = {**os.environ, "STREAMAPP_HOME": str(self.home)}
        ports = ["--brokers", "3", "--port", str(self.port), "--controller-port", str(self.port + 1)]
        return subprocess.run(
            [sys.executable, "-m", "streamapp.cli", "kafka", *args, *ports], env=env,
            capture_output=True, text=True, timeout=240, check=check,
        )  # fmt: skip

    def ensure_all_up(self) -> None:
        """Start any node a test stopped or killed, and wait until all three are registered."""
        for node in self.cluster.nodes:
            if node._pid() is None:
                self.cluster.start_node(node.node_id)
        self.cluster.wait_registered(3, lambda _m: None, time.monotonic() + 120)


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterUnderTest]:
    """Three Kafka nodes on loopback for the session, each a process of its own (320 MiB heap),
    from the jars already fetched; brought up and down by the project's own CLI."""
    real_libs = fetch_kafka_jars()
    home = tmp_path_factory.mktemp("cluster-home")
    version_dir = home / "kafka" / KAFKA_VERSION
    version_dir.mkdir(parents=True)
    (version_dir / "libs").symlink_to(real_libs, target_is_directory=True)
    port = _free_port_run(6)
    under_test = ClusterUnderTest(
        cluster=DevCluster(3, home=home, port=port, controller_port=port + 1), home=home, port=port
    )
    try:
        under_test.cli("up")
    except subprocess.CalledProcessError as exc:
        under_test.cli("down", check=False)
        pytest.fail(f"`streamapp kafka up --brokers 3` failed: {exc.stderr}")
    yield under_test
    under_test.cli("down", check=False)


# -- sinks: the project's own PostgreSQL and InfluxDB (streamapp postgres|influx up) --------------
@dataclass(frozen=True)
class SinkServers:
    """The session's dev PostgreSQL and InfluxDB, and the home their state lives in."""

    home: Path
    postgres: DevPostgres
    influx: DevInflux

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``streamapp ARGS`` (e.g. ``postgres down --port N``) against this session's servers."""
        env = {**os.environ, "STREAMAPP_HOME": str(self.home)}
        return subprocess.run(
            [sys.executable, "-m", "streamapp.cli", *args], env=env, capture_output=True, text=True,
            timeout=180, check=True,
        )  # fmt: skip


@pytest.fixture(scope="session")
def sink_servers() -> Iterator[SinkServers]:
    """PostgreSQL and InfluxDB started by the project's own `streamapp postgres|influx up` for the
    session, on free ports, stopped at the end. A server that cannot start fails the tests."""
    # a home every user can traverse: as root, PostgreSQL runs as the `postgres` OS user
    home = Path(f"/tmp/streamapp-sinks-{uuid.uuid4().hex[:8]}")
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    servers = SinkServers(
        home=home,
        postgres=DevPostgres(home=home, port=free_port()),
        influx=DevInflux(home=home, port=free_port()),
    )
    try:
        servers.cli("postgres", "up", "--port", str(servers.postgres.port))
        servers.cli("influx", "up", "--port", str(servers.influx.port))
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"cannot start the sink databases: {exc.stderr}")
    yield servers
    for args in (("postgres", "down"), ("influx", "down")):
        subprocess.run(
            [sys.executable, "-m", "streamapp.cli", *args, "--port",
             str(servers.postgres.port if args[0] == "postgres" else servers.influx.port)],
            env={**os.environ, "STREAMAPP_HOME": str(home)}, capture_output=True, timeout=120, check=False,
        )  # fmt: skip
    shutil.rmtree(home, ignore_errors=True)


@dataclass(frozen=True)
class SinkTargets:
    """This test's own PostgreSQL database and InfluxDB database, as the worker settings name them."""

    postgres_dsn: str
    influx_url: str
    influx_database: str
    servers: SinkServers


@pytest.fixture
def sink_targets(sink_servers: SinkServers, names: Names) -> Iterator[SinkTargets]:
    """A fresh PostgreSQL database and InfluxDB database per test (dropped afterwards)."""
    database = names.app_id.lower()
    admin_dsn = sink_servers.postgres.dsn

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{database}"'))
    dsn = admin_dsn.rsplit("/", 1)[0] + f"/{database}"
    yield SinkTargets(
        postgres_dsn=dsn,
        influx_url=f"{sink_servers.influx.base_url}/{database}",
        influx_database=database,
        servers=sink_servers,
    )
    if sink_servers.postgres.status().running:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    if sink_servers.influx.status().running:
        sink_servers.influx.query(f'DROP DATABASE "{database}"', database=None)
