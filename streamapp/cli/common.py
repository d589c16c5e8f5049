"""What every `streamapp` command shares: progress and error lines, settings, Kafka access checks."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import NoReturn

import click

from streamapp.runtime.kafka_clients import KafkaAccessError, check_access
from streamapp.runtime.replication import check_replication as check_replication_factor
from streamapp.settings import Settings, SettingsError, load_settings

__all__ = [
    "check_kafka_access",
    "check_replication",
    "configure_logging",
    "fail",
    "load_or_exit",
    "quiet_kafka_client",
    "say",
]


def say(message: str) -> None:
    """A progress line: on standard error, so standard output stays the command's result."""
    click.echo(message, err=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """One error line, then exit ``code`` (2: usage or setup, 1: the operation was refused)."""
    click.echo(f"streamapp: error: {message}", err=True)
    sys.exit(code)


def load_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        fail(str(exc))


def quiet_kafka_client() -> None:
    # aiokafka logs every failed connection attempt; the command says what failed in one line
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def configure_logging(level: str = "info") -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def check_kafka_access(settings: Settings) -> None:
    """Stop with one line (exit 1) when the broker refuses the credentials, TLS or the ACLs."""
    if settings.security_protocol == "PLAINTEXT":
        return  # nothing to refuse: faust's own retries cover a broker that is still starting
    try:
        asyncio.run(check_access(settings))
    except KafkaAccessError as exc:
        fail(str(exc), code=1)


def check_replication(settings: Settings) -> None:
    """Refuse STREAMAPP_REPLICATION_FACTOR above the brokers the cluster reports (exit 2)."""
    quiet_kafka_client()
    try:
        asyncio.run(check_replication_factor(settings))
    except SettingsError as exc:
        fail(str(exc))
    finally:
        logging.getLogger("aiokafka").setLevel(logging.NOTSET)
