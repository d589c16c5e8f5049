"""`streamapp <dev service> up|down|status|fetch`: the same commands, lines and exit codes for each."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from streamapp.cli import main

STOPPED = {
    "kafka": "dev broker: stopped (state in {home}/kafka/broker-1)",
    "registry": "dev schema registry: stopped",
    "s3": "dev s3: stopped (data in {home}/s3/s3-1/data)",
    "postgres": "dev postgres: stopped (data in {home}/postgres/port-1/data)",
    "influx": "dev influx: stopped (data in {home}/influx/port-1)",
    "prometheus": "dev prometheus: stopped (data in {home}/prometheus/port-1/data)",
}
NOT_RUNNING = {"kafka": "dev broker", "registry": "dev schema registry"}
DOWNLOADED = {"kafka", "registry", "s3"}


@pytest.mark.parametrize("service", sorted(STOPPED))
def test_status_and_down_of_a_service_never_started(service: str, tmp_path: Path) -> None:
    env = {"STREAMAPP_HOME": str(tmp_path)}
    status = CliRunner().invoke(main, [service, "status", "--port", "1"], env=env)
    assert status.exit_code == 3
    assert status.output.strip() == STOPPED[service].format(home=tmp_path)
    down = CliRunner().invoke(main, [service, "down", "--port", "1"], env=env)
    assert down.exit_code == 0
    assert down.output.strip() == f"{NOT_RUNNING.get(service, f'dev {service}')} is not running"


@pytest.mark.parametrize("service", sorted(STOPPED))
def test_every_service_has_up_down_status_and_fetch_when_it_downloads(service: str) -> None:
    expected = {"up", "down", "status"} | ({"fetch"} if service in DOWNLOADED else set())
    group = main.commands[service]
    assert set(group.commands) == expected  # type: ignore[attr-defined]
