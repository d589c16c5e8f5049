"""The ``streamapp`` command line: dev broker, worker, traffic generator and demo."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from streamapp.dev.kafka import DevBroker, DevBrokerError, fetch_kafka_jars
from streamapp.settings import Settings, SettingsError, load_settings

__all__ = ["main"]


def _say(message: str) -> None:
    click.echo(message, err=True)


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"streamapp: error: {message}", err=True)
    sys.exit(code)


@click.group()
def main() -> None:
    """streamapp: real-time detection on Apache Kafka."""


# -- dev broker -------------------------------------------------------------------------------
@main.group()
def kafka() -> None:
    """Run a real single-node Apache Kafka (KRaft) on 127.0.0.1 for development and tests."""


def _broker(port: int, controller_port: int) -> DevBroker:
    return DevBroker(port=port, controller_port=controller_port)


_port_option = click.option("--port", default=9092, show_default=True, help="Client port.")
_controller_option = click.option(
    "--controller-port", default=9093, show_default=True, help="KRaft controller port."
)


@kafka.command("up")
@_port_option
@_controller_option
def kafka_up(port: int, controller_port: int) -> None:
    """Fetch Kafka on first use, start the broker and wait until it answers."""
    try:
        status = _broker(port, controller_port).up(progress=_say)
    except DevBrokerError as exc:
        _fail(str(exc))
    click.echo(status.describe())


@kafka.command("down")
@_port_option
@_controller_option
def kafka_down(port: int, controller_port: int) -> None:
    """Stop the broker that `streamapp kafka up` started."""
    _broker(port, controller_port).down(progress=_say)


@kafka.command("status")
@_port_option
@_controller_option
def kafka_status(port: int, controller_port: int) -> None:
    """Say whether the dev broker runs, where, and whether it answers."""
    status = _broker(port, controller_port).status()
    click.echo(status.describe())
    sys.exit(0 if status.running else 3)


@kafka.command("fetch")
def kafka_fetch() -> None:
    """Only download the Kafka jars (done by `up` on first use)."""
    try:
        click.echo(fetch_kafka_jars(progress=_say))
    except DevBrokerError as exc:
        _fail(str(exc))


# -- worker -----------------------------------------------------------------------------------
@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--web-port", type=int, help="Web API port (default STREAMAPP_WEB_PORT or 6066).")
@click.option("--data-dir", type=click.Path(path_type=Path), help="RocksDB state directory.")
@click.option("--loglevel", "-l", default=None, help="Log level (default STREAMAPP_LOG_LEVEL).")
def worker(web_port: int | None, data_dir: Path | None, loglevel: str | None) -> None:
    """Run a Faust worker (same app as `faust -A streamapp.app worker`)."""
    if web_port is not None:
        os.environ["STREAMAPP_WEB_PORT"] = str(web_port)
    if data_dir is not None:
        os.environ["STREAMAPP_DATA_DIR"] = str(data_dir)
    _load_or_exit()
    from streamapp.app import app, import_app_modules, settings

    import_app_modules()

    level = loglevel or settings.log_level
    logging.getLogger("streamapp").setLevel(level.upper())
    sys.argv = ["streamapp", "worker", "--loglevel", level]
    app.main()


# -- traffic ----------------------------------------------------------------------------------
@main.command()
@click.option("--rate", default=200, show_default=True, help="Background events per second.")
@click.option("--duration", type=float, default=None, help="Seconds to run (default: until Ctrl-C).")
@click.option(
    "--scenario",
    type=click.Choice(["all", "logins", "sensors", "transactions", "stocks"]),
    default="all",
    show_default=True,
    help="Which input topics get traffic (all: the four, sharing --rate).",
)
@click.option("--keys/--no-keys", default=True, show_default=True, help="Set record keys.")
@click.option("--seed", type=int, default=None, help="Seed for reproducible traffic (default: random).")
@click.option(
    "--incidents",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help='Append every injected incident to FILE as a JSON line {"kind", "key", "at"}.',
)
def generate(
    rate: int, duration: float | None, scenario: str, keys: bool, seed: int | None, incidents: Path | None
) -> None:
    """Produce realistic traffic with injected incidents to the input topics."""
    import asyncio

    from streamapp.generate import SCENARIOS, produce_traffic

    if scenario not in SCENARIOS:
        _fail(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    if rate <= 0:
        _fail("--rate must be a positive number of events per second")
    _configure_logging()
    settings = _load_or_exit()
    try:
        sent = asyncio.run(produce_traffic(settings, scenario, rate, duration, keys, seed, incidents))
    except KeyboardInterrupt:
        return
    _say(f"produced {sent} events")


@main.command()
@click.option("--rate", default=200, show_default=True, help="Background events per second.")
@click.option("--duration", type=float, default=None, help="Stop after S seconds (default: Ctrl-C).")
def demo(rate: int, duration: float | None) -> None:
    """Start the dev broker, a worker and traffic; show alerts live; Ctrl-C stops all of it."""
    from streamapp.demo import run_demo

    settings = _load_or_exit()
    try:
        run_demo(settings, click.echo, rate=rate, duration=duration)
    except DevBrokerError as exc:
        _fail(str(exc))


def _configure_logging(level: str = "info") -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _load_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        _fail(str(exc))
        raise  # unreachable: _fail exits


if __name__ == "__main__":  # pragma: no cover
    main()
