"""Shared fixtures: the real Kafka broker for the session and isolated worker processes."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from streamapp.dev.kafka import DevBroker, broker_answers
from streamapp.dev.registry import DevRegistry, DevRegistryError, registry_answers


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``host:port`` of a real broker: ``STREAMAPP_TEST_BROKER`` or the project's dev broker.

    A broker that cannot be reached fails the tests; integration tests never skip.
    """
    given = os.environ.get("STREAMAPP_TEST_BROKER")
    if given:
        bootstrap = given.split("://", 1)[-1]
        if not broker_answers(bootstrap, timeout=10):
            pytest.fail(f"STREAMAPP_TEST_BROKER={given} does not answer")
        yield bootstrap
        return
    broker = DevBroker()
    started_here = not broker.status().running
    status = broker.up()
    if not status.answers:
        pytest.fail(f"the dev broker does not answer: see {status.log_file}")
    yield broker.bootstrap
    if started_here:
        broker.down()


@pytest.fixture(scope="session")
def schema_registry_url() -> Iterator[str]:
    """API root of a real schema registry: ``STREAMAPP_TEST_SCHEMA_REGISTRY`` or the project's dev registry.

    The dev registry (Apicurio, in memory) is started with the project's own `streamapp registry up`
    code and stopped at the end if this session started it. A registry that cannot be had fails
    the tests that need it; they never skip.
    """
    given = os.environ.get("STREAMAPP_TEST_SCHEMA_REGISTRY")
    if given:
        if not registry_answers(given, timeout=10):
            pytest.fail(f"STREAMAPP_TEST_SCHEMA_REGISTRY={given} does not answer")
        yield given.rstrip("/")
        return
    registry = DevRegistry()
    started_here = not registry.status().running
    if started_here and _port_taken(registry.host, registry.port):
        # the default port belongs to something else (another home's registry, another program):
        # run this session's own registry on a free port instead
        registry = DevRegistry(port=_free_port())
    try:
        status = registry.up()
    except DevRegistryError as exc:
        pytest.fail(f"the dev schema registry cannot start: {exc}")
    if not status.answers:
        pytest.fail(f"the dev schema registry does not answer: see {status.log_file}")
    yield registry.url
    if started_here:
        registry.down()


def _port_taken(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
