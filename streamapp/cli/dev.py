"""`streamapp registry|s3|postgres|influx|prometheus up|down|status|fetch`: the dev services, one
command set generated for all of them (kafka adds its cluster and security options in cli/kafka.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from streamapp.cli.common import fail, say
from streamapp.dev.influx import DEFAULT_INFLUX_PORT, DevInflux
from streamapp.dev.postgres import DEFAULT_POSTGRES_PORT, DevPostgres
from streamapp.dev.prometheus import (
    DEFAULT_PROMETHEUS_PORT,
    DEFAULT_SCRAPE_INTERVAL,
    DEFAULT_TARGET,
    DevPrometheus,
)
from streamapp.dev.registry import DEFAULT_REGISTRY_PORT, DevRegistry, fetch_registry
from streamapp.dev.s3 import DEFAULT_S3_PORT, DevS3, fetch_s3proxy
from streamapp.dev.service import DevService, DevServiceError

__all__ = ["ServiceCommands", "influx", "postgres", "prometheus", "registry", "s3", "service_group"]


@dataclass(frozen=True)
class ServiceCommands:
    """What `streamapp <service> ...` says about one dev service: its help texts and its port."""

    name: str
    service: Callable[[int], DevService[Any]]
    help: str
    port: int
    port_help: str
    up_help: str
    down_help: str
    status_help: str
    #: downloads the server (`streamapp <service> fetch`); None when a Debian package provides it
    fetch: Callable[..., Path] | None = None
    fetch_help: str = ""
    #: `status` also prints how to point the app at a running server
    usage_in_status: bool = False

    def port_option(self) -> Callable[[Any], Any]:
        return click.option("--port", default=self.port, show_default=True, help=self.port_help)


def start(service: DevService[Any], **options: Any) -> None:
    """`up`: start the service (exit 2 with the reason when it cannot), say where it runs, how to use it."""
    try:
        status = service.up(progress=say, **options)
    except DevServiceError as exc:
        fail(str(exc))
    click.echo(status.describe())
    if status.usage():
        say(status.usage())


def show_status(status: Any, usage: bool = False) -> None:
    """`status`: one line (more for a cluster); exit 0 when it runs, 3 when it does not."""
    click.echo(status.describe())
    if usage and status.running:
        say(status.usage())
    sys.exit(0 if status.running else 3)


def service_group(spec: ServiceCommands) -> click.Group:
    """The command group of one dev service: up, down, status (and fetch when it downloads the server)."""
    group = click.Group(spec.name, help=spec.help)

    @group.command("up", help=spec.up_help)
    @spec.port_option()
    def up(port: int) -> None:
        start(spec.service(port))

    @group.command("down", help=spec.down_help)
    @spec.port_option()
    def down(port: int) -> None:
        try:
            spec.service(port).down(progress=say)
        except DevServiceError as exc:
            fail(str(exc))

    @group.command("status", help=spec.status_help)
    @spec.port_option()
    def status(port: int) -> None:
        show_status(spec.service(port).status(), spec.usage_in_status)

    if spec.fetch is not None:
        fetch_server = spec.fetch

        @group.command("fetch", help=spec.fetch_help)
        def fetch() -> None:
            try:
                click.echo(fetch_server(progress=say))
            except DevServiceError as exc:
                fail(str(exc))

    return group


registry = service_group(
    ServiceCommands(
        "registry", lambda port: DevRegistry(port=port),
        help="Run a real schema registry (Apicurio, in memory, Confluent-compatible API) on 127.0.0.1.",
        port=DEFAULT_REGISTRY_PORT, port_help="HTTP port of the registry.",
        up_help="Fetch Apicurio Registry on first use, start it and wait until it answers.",
        down_help="Stop the registry that `streamapp registry up` started (its schemas are gone: in memory).",
        status_help="Say whether the dev registry runs, where, and whether it answers.",
        fetch=fetch_registry, fetch_help="Only download Apicurio Registry (done by `up` on first use).",
    )
)  # fmt: skip

s3 = service_group(
    ServiceCommands(
        "s3", lambda port: DevS3(port=port),
        help="Run a real S3-compatible server (S3Proxy, filesystem backend) on 127.0.0.1 for the archive.",
        port=DEFAULT_S3_PORT, port_help="S3 HTTP port.",
        up_help="Fetch S3Proxy on first use, start it with generated credentials and print how to use it.",
        down_help="Stop the S3Proxy that `streamapp s3 up` started (its objects stay).",
        status_help="Say whether the dev S3 server runs, where, and whether it answers.",
        fetch=fetch_s3proxy, fetch_help="Only download S3Proxy (done by `up` on first use).",
        usage_in_status=True,
    )
)  # fmt: skip

postgres = service_group(
    ServiceCommands(
        "postgres", lambda port: DevPostgres(port=port),
        help="Run a real PostgreSQL (Debian's package) on 127.0.0.1 for the sink.",
        port=DEFAULT_POSTGRES_PORT, port_help="PostgreSQL port.",
        up_help="Create the cluster on first use, start it and print the DSN to use.",
        down_help="Stop the PostgreSQL that `streamapp postgres up` started (its data stays).",
        status_help="Say whether the dev PostgreSQL runs, where, and whether it accepts connections.",
    )
)  # fmt: skip

influx = service_group(
    ServiceCommands(
        "influx", lambda port: DevInflux(port=port),
        help="Run a real InfluxDB 1.x (Debian's package) on 127.0.0.1 for the sink.",
        port=DEFAULT_INFLUX_PORT, port_help="InfluxDB HTTP port.",
        up_help="Start influxd with a generated config, create the database and print the URL to use.",
        down_help="Stop the influxd that `streamapp influx up` started (its data stays).",
        status_help="Say whether the dev InfluxDB runs, where, and whether it answers.",
    )
)  # fmt: skip

_prometheus = ServiceCommands(
    "prometheus", lambda port: DevPrometheus(port=port),
    help="Run a real Prometheus (Debian's package) on 127.0.0.1 that scrapes the workers.",
    port=DEFAULT_PROMETHEUS_PORT, port_help="Prometheus web/API port.",
    up_help="Start Prometheus (or give the running one new targets) and wait until it is ready.",
    down_help="Stop the Prometheus that `streamapp prometheus up` started (its data stays).",
    status_help="Say whether the dev Prometheus runs, what it scrapes, and whether it is ready.",
)  # fmt: skip
prometheus = service_group(_prometheus)


# `prometheus up` takes what to scrape as well
@prometheus.command("up", help=_prometheus.up_help)
@_prometheus.port_option()
@click.option(
    "--target",
    "targets",
    multiple=True,
    default=(DEFAULT_TARGET,),
    show_default=True,
    help="A worker's web address host:port to scrape (repeatable).",
)
@click.option(
    "--scrape-interval", default=DEFAULT_SCRAPE_INTERVAL, show_default=True, help="How often to scrape."
)
def prometheus_up(port: int, targets: tuple[str, ...], scrape_interval: str) -> None:
    start(DevPrometheus(port=port), targets=targets, interval=scrape_interval)
