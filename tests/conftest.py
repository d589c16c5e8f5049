"""Shared fixtures: the real Kafka broker for the session and isolated worker processes."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from streamapp.dev.kafka import DevBroker, broker_answers


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
