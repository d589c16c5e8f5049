"""The embedded development broker: Apache Kafka from Maven Central, run in KRaft mode on loopback."""

from __future__ import annotations

import base64
import logging
import os
import shutil
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import ClassVar

from streamapp.dev import secure as secure_setup
from streamapp.dev import service
from streamapp.dev.kafka_probe import broker_answers, cluster_brokers
from streamapp.dev.maven import fetch_jars
from streamapp.dev.secure import SecureMaterial
from streamapp.dev.service import (
    DevService,
    DevServiceError,
    Progress,
    ServiceKind,
    ServiceStatus,
    streamapp_home,
)
from streamapp.runtime.replication import min_insync_replicas

__all__ = [
    "KAFKA_VERSION",
    "BrokerStatus",
    "DevBroker",
    "DevBrokerError",
    "broker_answers",
    "cluster_brokers",
    "fetch_kafka_jars",
    "java_major_version",
    "new_cluster_id",
    "streamapp_home",
]

KAFKA_VERSION = "4.3.1"
_MIN_JAVA = 17
_HEAP = os.environ.get("STREAMAPP_KAFKA_HEAP", "512m")

logger = logging.getLogger(__name__)


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID in URL-safe base64, like ``kafka-storage random-uuid``.

    Never one that starts with "-" (Kafka's ``Uuid.randomUuid`` rejects those too): the storage
    tool's argument parser would take it for an option and fail one format in 64.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


class DevBrokerError(DevServiceError):
    """A dev broker operation failed; the message says what to do."""


def java_major_version(java: str = "java") -> int:
    """The major version of the ``java`` on PATH, or raise with what to install."""
    return service.java_major_version(java, DevBrokerError)


def fetch_kafka_jars(home: Path | None = None, progress: Progress | None = None) -> Path:
    """Download Kafka and its logging jars with Maven once; return the directory holding them."""
    libs = (home or streamapp_home()) / "kafka" / KAFKA_VERSION / "libs"
    announce = f"fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central into {libs} ..."
    return fetch_jars(
        libs, "kafka-pom.xml", "Kafka", "kafka_2.13", DevBrokerError, progress, announce, count_downloads=True
    )


@dataclass(frozen=True)
class BrokerStatus(ServiceStatus):
    """What `streamapp kafka status` reports."""

    label: ClassVar[str] = "dev broker"
    kept: ClassVar[str] = "state"

    bootstrap: str
    #: ``host:port`` of the SASL_SSL listener when the broker runs with ``--secure``
    secure_bootstrap: str | None = None

    def running_detail(self, health: str) -> str:
        secure = f", SASL_SSL on {self.secure_bootstrap}" if self.secure_bootstrap else ""
        return (
            f"Kafka {KAFKA_VERSION} (KRaft) on {self.bootstrap}"
            f"{secure}, {health}; data {self.kept_in}/data, log {self.log_file}"
        )


class DevBroker(DevService[BrokerStatus]):
    """A single-node KRaft broker+controller whose files live under one state directory."""

    kind = ServiceKind(
        "kafka", "dev broker", "broker", DevBrokerError, state_prefix="broker-",
        start_timeout=90.0, stop_timeout=30.0, probe_timeout=2.0,
        exited="the broker exited with code {returncode}; last log lines:\n{log_tail}",
        not_ready="the broker did not answer within {timeout:.0f} s:\n{log_tail}",
    )  # fmt: skip

    def __init__(
        self,
        home: Path | None = None,
        port: int = 9092,
        controller_port: int = 9093,
        host: str = "127.0.0.1",
        *,
        secure: bool = False,
        secure_port: int = 9094,
        extra_users: tuple[str, ...] = (),
        app_id: str = "streamapp",
        topic_prefix: str = "",
        node_id: int = 1,
        voters: tuple[tuple[int, int], ...] = (),
        state_dir: Path | None = None,
        cluster_id: str | None = None,
        heap: str = _HEAP,
    ) -> None:
        super().__init__(home, port, host, state_dir)
        # a node of a DevCluster: (node id, controller port) of every voter; () for a single node
        self.node_id = node_id
        self.voters = voters
        self.cluster_id = cluster_id
        self.heap = heap
        self.controller_port = controller_port
        # --secure: a SASL_SSL listener too, SCRAM users, the StandardAuthorizer (see dev/secure.py)
        self.secure = secure
        self.secure_port = secure_port
        self.extra_users = extra_users
        self.app_id = app_id  # whose topics, group and transactional ids the app's user may use
        self.topic_prefix = topic_prefix
        self.material: SecureMaterial | None = None
        self.config_file = self.state_dir / "server.properties"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def secure_bootstrap(self) -> str:
        return f"{self.host}:{self.secure_port}"

    def _running_secure(self) -> bool:
        try:
            return "SASL_SSL://" in self.config_file.read_text()
        except FileNotFoundError:
            return False

    # -- process bookkeeping -------------------------------------------------------------
    def _owns(self, cmdline: list[bytes]) -> bool:
        """A java running our config."""
        return b"kafka.Kafka" in cmdline and str(self.config_file).encode() in cmdline

    def answers(self, timeout: float = 3.0) -> bool:
        return broker_answers(self.bootstrap, timeout)

    def _status(self, pid: int | None, answers: bool) -> BrokerStatus:
        return BrokerStatus(
            pid, answers, self.log_file, self.state_dir, bootstrap=self.bootstrap,
            secure_bootstrap=self._secure_listener() if pid is not None else None,
        )  # fmt: skip

    def _secure_listener(self) -> str | None:
        try:
            text = self.config_file.read_text()
        except FileNotFoundError:
            return None
        for line in text.splitlines():
            if line.startswith("advertised.listeners="):
                for listener in line.split("=", 1)[1].split(","):
                    if listener.startswith("SASL_SSL://"):
                        return listener.removeprefix("SASL_SSL://")
        return None

    # -- configuration -------------------------------------------------------------------
    def _server_properties(self) -> str:
        data = self.state_dir / "data"
        listeners = f"PLAINTEXT://{self.host}:{self.port}"
        protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        secure: list[str] = []
        if self.material is not None:
            listeners += f",SASL_SSL://{self.host}:{self.secure_port}"
            protocols += ",SASL_SSL:SASL_SSL"
            secure = secure_setup.server_properties(self.material, self.host, self.secure_port)
        nodes = max(1, len(self.voters))
        # internal topics replicate to three nodes at most; min.isr 2 once there are three
        replicas = min(3, nodes)
        min_isr = min_insync_replicas(replicas)
        if self.voters:
            quorum = "controller.quorum.voters=" + ",".join(
                f"{node}@{self.host}:{port}" for node, port in self.voters
            )
        else:
            quorum = f"controller.quorum.bootstrap.servers={self.host}:{self.controller_port}"
        cluster = (
            [
                f"default.replication.factor={replicas}",
                f"min.insync.replicas={min_isr}",
                "num.replica.fetchers=1",
                # a killed node is fenced and its partitions led elsewhere after 4 s, not 9
                "broker.session.timeout.ms=4000",
                "broker.heartbeat.interval.ms=1000",
                "replica.lag.time.max.ms=10000",
            ]
            if self.voters
            else []
        )
        return "\n".join(
            [
                "process.roles=broker,controller",
                f"node.id={self.node_id}",
                f"listeners={listeners},CONTROLLER://{self.host}:{self.controller_port}",
                f"advertised.listeners={listeners}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                f"listener.security.protocol.map={protocols}",
                quorum,
                f"log.dirs={data}",
                "num.partitions=8",
                "num.network.threads=2",
                "num.io.threads=4",
                # internal topics: as many replicas as the nodes allow (1 on a single node)
                f"offsets.topic.replication.factor={replicas}",
                "offsets.topic.num.partitions=8",
                f"transaction.state.log.replication.factor={replicas}",
                f"transaction.state.log.min.isr={min_isr}",
                "transaction.state.log.num.partitions=8",
                f"share.coordinator.state.topic.replication.factor={replicas}",
                f"share.coordinator.state.topic.min.isr={min_isr}",
                *cluster,
                # the 3 s default delays every consumer group join (and every test)
                "group.initial.rebalance.delay.ms=0",
                # the cleaner reserves 128 MiB of heap by default; compacted changelogs are small here
                "log.cleaner.dedupe.buffer.size=16777216",
                "auto.create.topics.enable=true",
                "message.max.bytes=2097152",
                *secure,
                "",
            ]
        )

    def _format(self, libs: Path) -> None:
        cluster_id = self.cluster_id or new_cluster_id()
        java = ["java", "-cp", f"{libs}/*", f"-Dlog4j2.configurationFile={self._log4j()}"]
        main = [
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(self.config_file),
            # a cluster's nodes name their voters in controller.quorum.voters (a static quorum)
            *(() if self.voters else ("--standalone",)),
        ]
        argfile = self.state_dir / "format.args"
        if self.material is None:
            cmd = [*java, *main]
        else:
            # the SCRAM passwords go in a private argfile the java launcher reads: never on argv
            secure_setup.write_java_argfile(argfile, [*main, *secure_setup.scram_arguments(self.material)])
            cmd = [*java, f"@{argfile}"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        finally:
            argfile.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise DevBrokerError(f"formatting KRaft storage failed:\n{proc.stdout}{proc.stderr}")

    def _log4j(self) -> Path:
        target = self.state_dir / "log4j2.properties"
        if not target.exists():
            target.write_text(resources.files("streamapp.dev").joinpath("log4j2.properties").read_text())
        return target

    # -- lifecycle -----------------------------------------------------------------------
    # A node of a cluster cannot answer before a majority of the voters runs: DevCluster starts
    # every node with ``up(wait=False)``, then waits for all of them.
    def _already_running(self, say: Progress) -> bool:
        if self.secure and self._pid() is not None:
            if not self._running_secure():
                raise DevBrokerError(
                    f"the dev broker on {self.bootstrap} runs without --secure: stop it first "
                    "(`streamapp kafka down`), then `streamapp kafka up --secure` (formats its storage again)"
                )
            self.material = secure_setup.prepare_material(self.state_dir, self.host, self.extra_users)
        return super()._already_running(say)

    def _prepare(self, say: Progress) -> None:
        service.require_java(_MIN_JAVA, f"Kafka {KAFKA_VERSION}", DevBrokerError)

    def _check_ports(self, ports: Sequence[int] = (), advice: str = "") -> None:
        super()._check_ports(
            (self.port, self.controller_port, *((self.secure_port,) if self.secure else ())),
            "free ports with `streamapp kafka up --port N --controller-port M`",
        )

    def _start(self, say: Progress, timeout: float) -> subprocess.Popen[bytes]:
        libs = fetch_kafka_jars(self.home, say)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.secure:
            try:
                self.material = secure_setup.prepare_material(self.state_dir, self.host, self.extra_users)
            except secure_setup.SecureSetupError as exc:
                raise DevBrokerError(str(exc)) from None
        wanted = self._server_properties()
        if not (self.state_dir / "data" / "meta.properties").exists() or (
            self.config_file.exists() and self.config_file.read_text() != wanted
        ):
            shutil.rmtree(self.state_dir / "data", ignore_errors=True)
            secure_setup.write_secret(self.config_file, wanted)  # --secure: it holds the keystore password
            say("formatting KRaft storage ...")
            self._format(libs)
        proc = self._spawn(
            [
                "java", f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={self._log4j()}",
                "-cp", f"{libs}/*", "kafka.Kafka", str(self.config_file),
            ]
        )  # fmt: skip
        say(f"starting Kafka {KAFKA_VERSION} on {self.bootstrap} (pid {proc.pid}, heap {self.heap}) ...")
        return proc

    def _on_ready(self, say: Progress, elapsed: float) -> None:
        super()._on_ready(say, elapsed)
        if self.material is not None:
            self._secure_up(say)

    def _secure_up(self, say: Progress) -> None:
        assert self.material is not None
        say(f"granting user {secure_setup.APP_USER!r} the ACLs of app id {self.app_id} ...")
        self.grant_app(secure_setup.APP_USER, self.app_id, self.topic_prefix)
        say(
            f"SASL_SSL ({secure_setup.SCRAM_MECHANISM}) on {self.secure_bootstrap}; CA certificate "
            f"{self.material.ca_file}; user {secure_setup.APP_USER!r}, password in "
            f"{self.material.password_file(secure_setup.APP_USER)}; admin tools: --command-config "
            f"{self.material.admin_config}"
        )

    def grant_app(self, user: str, app_id: str, topic_prefix: str = "", libs: Path | None = None) -> None:
        """Let ``user`` use the topics, group and transactional ids of ``app_id`` (secure mode)."""
        if self.material is None:
            raise DevBrokerError("ACLs need a broker started with --secure")
        try:
            secure_setup.grant(
                libs or fetch_kafka_jars(self.home), self._log4j(), self.secure_bootstrap, self.material,
                secure_setup.acl_commands(user, app_id, topic_prefix),
            )  # fmt: skip
        except (secure_setup.SecureSetupError, subprocess.TimeoutExpired) as exc:
            raise DevBrokerError(str(exc)) from None
