"""`streamapp generate` and `streamapp demo`: traffic with injected incidents, and the whole loop."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from streamapp.cli.common import (
    check_kafka_access,
    configure_logging,
    fail,
    load_or_exit,
    say,
)
from streamapp.dev.kafka import DevBrokerError
from streamapp.ops.demo import run_demo
from streamapp.ops.generate import SCENARIOS, produce_traffic

__all__ = ["demo", "generate"]


@click.command()
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
    if scenario not in SCENARIOS:
        fail(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    if rate <= 0:
        fail("--rate must be a positive number of events per second")
    configure_logging()
    settings = load_or_exit()
    check_kafka_access(settings)
    try:
        sent = asyncio.run(produce_traffic(settings, scenario, rate, duration, keys, seed, incidents))
    except KeyboardInterrupt:
        return
    say(f"produced {sent} events")


@click.command()
@click.option("--rate", default=200, show_default=True, help="Background events per second.")
@click.option("--duration", type=float, default=None, help="Stop after S seconds (default: Ctrl-C).")
def demo(rate: int, duration: float | None) -> None:
    """Start the dev broker, a worker and traffic; show alerts live; Ctrl-C stops all of it.

    When the worker or the generator stops on its own, the demo says which, shows the end of its log,
    stops the rest and exits 1.
    """
    settings = load_or_exit()
    try:
        code = run_demo(settings, click.echo, rate=rate, duration=duration)
    except DevBrokerError as exc:
        fail(str(exc))
    sys.exit(code)
