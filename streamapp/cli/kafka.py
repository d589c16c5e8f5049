"""`streamapp kafka up|down|status|fetch`: the dev broker, a local cluster of N nodes, or a secure one."""

from __future__ import annotations

import click

from streamapp.cli.common import fail, load_or_exit, say
from streamapp.cli.dev import ServiceCommands, service_group, show_status
from streamapp.dev.kafka import DevBroker, DevBrokerError, fetch_kafka_jars
from streamapp.dev.kafka_cluster import DevCluster

__all__ = ["kafka"]

_commands = ServiceCommands(
    "kafka", lambda port: DevBroker(port=port),
    help="Run a real single-node Apache Kafka (KRaft) on 127.0.0.1 for development and tests.",
    port=9092, port_help="Client port.",
    up_help="Fetch Kafka on first use, start the broker (or --brokers N nodes) and wait until it answers.",
    down_help="Stop the broker (or every node of the --brokers N cluster) that `streamapp kafka up` started.",
    status_help=(
        "Say whether the dev broker (or each node of the cluster) runs, where, and whether it answers."
    ),
    fetch=fetch_kafka_jars, fetch_help="Only download the Kafka jars (done by `up` on first use).",
)  # fmt: skip
#: fetch as every service has it; up, down and status take the controller port and --brokers too
kafka = service_group(_commands)

_controller_option = click.option(
    "--controller-port", default=9093, show_default=True, help="KRaft controller port."
)
_brokers_option = click.option(
    "--brokers", type=click.IntRange(min=1, max=9), default=1, show_default=True,
    help="Nodes: more than 1 runs a local KRaft cluster, node i on --port+2i and --controller-port+2i.",
)  # fmt: skip


def _nodes(port: int, controller_port: int, brokers: int) -> DevBroker | DevCluster:
    """The single broker, or the cluster of ``brokers`` nodes."""
    if brokers > 1:
        return DevCluster(brokers, port=port, controller_port=controller_port)
    return DevBroker(port=port, controller_port=controller_port)


def _secure_broker(port: int, controller_port: int, secure_port: int) -> DevBroker:
    """A broker with a SASL_SSL listener whose ACLs let the app's user use the app's topics."""
    settings = load_or_exit()
    return DevBroker(
        port=port, controller_port=controller_port, secure=True, secure_port=secure_port,
        app_id=settings.app_id, topic_prefix=settings.topic_prefix,
    )  # fmt: skip


@kafka.command("up", help=_commands.up_help)
@_commands.port_option()
@_controller_option
@_brokers_option
@click.option(
    "--secure", is_flag=True,
    help="Also listen with SASL_SSL (SCRAM-SHA-512, self-signed TLS) with ACLs; see docs/security.md.",
)  # fmt: skip
@click.option("--secure-port", default=9094, show_default=True, help="SASL_SSL port (with --secure).")
def kafka_up(port: int, controller_port: int, brokers: int, secure: bool, secure_port: int) -> None:
    if secure and brokers > 1:
        fail("--secure runs on a single node: use it without --brokers")
    try:
        broker = (
            _secure_broker(port, controller_port, secure_port)
            if secure
            else _nodes(port, controller_port, brokers)
        )
        status = broker.up(progress=say)
    except DevBrokerError as exc:
        fail(str(exc))
    click.echo(status.describe())
    if isinstance(broker, DevBroker) and broker.material is not None:
        say(
            "point workers at it: STREAMAPP_BROKER=kafka://"
            + broker.secure_bootstrap
            + " STREAMAPP_SECURITY_PROTOCOL=SASL_SSL STREAMAPP_SASL_MECHANISM=SCRAM-SHA-512"
            + " STREAMAPP_SASL_USERNAME=streamapp"
            + f' STREAMAPP_SASL_PASSWORD="$(cat {broker.material.password_file("streamapp")})"'
            + f" STREAMAPP_SSL_CAFILE={broker.material.ca_file}"
        )


@kafka.command("down", help=_commands.down_help)
@_commands.port_option()
@_controller_option
@_brokers_option
def kafka_down(port: int, controller_port: int, brokers: int) -> None:
    _nodes(port, controller_port, brokers).down(progress=say)


@kafka.command("status", help=_commands.status_help)
@_commands.port_option()
@_controller_option
@_brokers_option
def kafka_status(port: int, controller_port: int, brokers: int) -> None:
    show_status(_nodes(port, controller_port, brokers).status())
