"""A local multi-node KRaft cluster for development and failure tests: N dev brokers, one quorum."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from streamapp.dev.kafka import (
    BrokerStatus,
    DevBroker,
    DevBrokerError,
    new_cluster_id,
)
from streamapp.dev.kafka_probe import cluster_brokers
from streamapp.dev.service import Progress, silent, streamapp_home

__all__ = ["ClusterStatus", "DevCluster"]

#: each node of a local multi-broker cluster: three of them share the machine with the workers
_CLUSTER_HEAP = os.environ.get("STREAMAPP_KAFKA_HEAP", "320m")


@dataclass(frozen=True)
class ClusterStatus:
    """What `streamapp kafka status --brokers N` reports: every node, and the brokers registered."""

    nodes: tuple[BrokerStatus, ...]
    registered: int

    @property
    def running(self) -> bool:
        return all(node.running for node in self.nodes)

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def describe(self) -> str:
        lines = [
            f"dev cluster: {sum(n.running for n in self.nodes)} of {len(self.nodes)} nodes running, "
            f"{self.registered} brokers registered; "
            f"STREAMAPP_BROKER=kafka://{self.bootstrap.replace(',', ';')}"
        ]
        for index, node in enumerate(self.nodes, start=1):
            lines.append(f"  node {index}: " + node.describe().removeprefix("dev broker: "))
        return "\n".join(lines)


class DevCluster:
    """A local KRaft cluster: ``brokers`` nodes on loopback, each broker and controller (a static
    quorum of all of them), each a Kafka process of its own from the same jars, with a small heap.

    Node ``i`` (0-based) listens on ``port + 2*i`` for clients and ``controller_port + 2*i`` for the
    quorum, unless ``ports``/``controller_ports`` name them. Its files live under
    ``$STREAMAPP_HOME/kafka/cluster-<first port>/node-<i+1>``.
    """

    def __init__(
        self,
        brokers: int = 3,
        home: Path | None = None,
        port: int = 9092,
        controller_port: int = 9093,
        host: str = "127.0.0.1",
        *,
        ports: tuple[int, ...] = (),
        controller_ports: tuple[int, ...] = (),
        heap: str = _CLUSTER_HEAP,
    ) -> None:
        if brokers < 1:
            raise DevBrokerError("--brokers must be 1 or more")
        self.home = home or streamapp_home()
        self.host = host
        self.ports = ports or tuple(port + 2 * i for i in range(brokers))
        self.controller_ports = controller_ports or tuple(controller_port + 2 * i for i in range(brokers))
        if len(self.ports) != brokers or len(self.controller_ports) != brokers:
            raise DevBrokerError(f"a cluster of {brokers} brokers needs {brokers} ports and controller ports")
        if len(set(self.ports) | set(self.controller_ports)) != 2 * brokers:
            raise DevBrokerError(f"the ports of the cluster overlap: {self.ports} {self.controller_ports}")
        self.state_dir = self.home / "kafka" / f"cluster-{self.ports[0]}"
        self.cluster_id_file = self.state_dir / "cluster.id"
        voters = tuple((i + 1, cport) for i, cport in enumerate(self.controller_ports))
        self.nodes = tuple(
            DevBroker(
                home=self.home,
                port=p,
                controller_port=c,
                host=host,
                node_id=i + 1,
                voters=voters,
                state_dir=self.state_dir / f"node-{i + 1}",
                heap=heap,
            )  # fmt: skip
            for i, (p, c) in enumerate(zip(self.ports, self.controller_ports, strict=True))
        )

    @property
    def bootstrap(self) -> str:
        """Every node, comma-separated (what aiokafka's ``bootstrap_servers`` takes)."""
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def broker_url(self) -> str:
        """``STREAMAPP_BROKER`` for this cluster."""
        return "kafka://" + ";".join(node.bootstrap for node in self.nodes)

    def status(self) -> ClusterStatus:
        nodes = tuple(node.status() for node in self.nodes)
        alive = [n.bootstrap for n in nodes if n.answers]
        return ClusterStatus(nodes=nodes, registered=cluster_brokers(alive[0]) if alive else 0)

    def node(self, node_id: int) -> DevBroker:
        """The node with this KRaft node id (1-based)."""
        return self.nodes[node_id - 1]

    def _cluster_id(self) -> str:
        # every node is formatted with the same cluster id, kept so a node formatted again joins
        try:
            return self.cluster_id_file.read_text().strip()
        except FileNotFoundError:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            cluster_id = new_cluster_id()
            self.cluster_id_file.write_text(cluster_id)
            return cluster_id

    def up(self, progress: Progress | None = None, timeout: float = 120.0) -> ClusterStatus:
        """Start every node that is not running; return once all brokers are registered."""
        say = progress or silent
        cluster_id = self._cluster_id()
        started = time.monotonic()
        for node in self.nodes:
            node.cluster_id = cluster_id
            node.up(progress=say, wait=False)
        return self.wait_registered(len(self.nodes), say, started + timeout)

    def start_node(self, node_id: int, progress: Progress | None = None, timeout: float = 90.0) -> None:
        """Start one node again (after `kill -9` or `stop_node`) and wait until it is registered."""
        node = self.node(node_id)
        node.cluster_id = self._cluster_id()
        node.up(progress=progress, wait=False)
        self.wait_registered(len(self.nodes), progress or silent, time.monotonic() + timeout)

    def wait_registered(self, brokers: int, say: Progress, deadline: float) -> ClusterStatus:
        started = time.monotonic()
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node._pid() is None and node.pid_file.exists():
                    raise DevBrokerError(
                        f"node {node.node_id} ({node.bootstrap}) exited; last log lines:\n{node._log_tail()}"
                    )
            registered = max((cluster_brokers(n.bootstrap, 3.0) for n in self.nodes if n._pid()), default=0)
            if registered >= brokers:
                say(
                    f"dev cluster up: {registered} brokers on {self.bootstrap} "
                    f"in {time.monotonic() - started:.1f} s"
                )
                return self.status()
            time.sleep(0.5)
        tails = "\n".join(f"-- node {n.node_id}:\n{n._log_tail(8)}" for n in self.nodes)
        raise DevBrokerError(f"the cluster did not register {brokers} brokers in time:\n{tails}")

    def down(self, progress: Progress | None = None, timeout: float = 30.0) -> bool:
        """Stop every node; True when at least one was running."""
        say = progress or silent
        stopped = [node.down(progress=None, timeout=timeout) for node in self.nodes]
        say(f"dev cluster stopped ({sum(stopped)} of {len(self.nodes)} nodes were running)")
        return any(stopped)
