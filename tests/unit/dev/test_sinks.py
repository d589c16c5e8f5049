"""`streamapp postgres|influx`: one-line errors when Debian's binaries are missing; the generated config."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from streamapp import cli
from streamapp.dev import influx, postgres


def test_missing_influxd_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("STREAMAPP_HOME", str(tmp_path))
    result = CliRunner().invoke(cli.main, ["influx", "up", "--port", "1"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "streamapp: error: influxd not found: install it with `apt-get install influxdb`"
    )


def test_missing_postgres_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("STREAMAPP_HOME", str(tmp_path))
    monkeypatch.setattr(postgres.glob, "glob", lambda pattern: [])
    result = CliRunner().invoke(cli.main, ["postgres", "up", "--port", "1"])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "apt-get install postgresql" in result.output


def test_influx_config_keeps_everything_under_the_state_dir(tmp_path: Path) -> None:
    text = influx.influx_config(tmp_path, "127.0.0.1", 8086, 18088)
    assert f'dir = "{tmp_path / "meta"}"' in text and f'wal-dir = "{tmp_path / "wal"}"' in text
    assert 'bind-address = "127.0.0.1:8086"' in text and 'bind-address = "127.0.0.1:18088"' in text
    assert "reporting-disabled = true" in text


def test_status_of_servers_never_started(tmp_path: Path) -> None:
    assert not postgres.DevPostgres(home=tmp_path, port=1).status().running
    assert not influx.DevInflux(home=tmp_path, port=1).status().running
    assert influx.DevInflux(home=tmp_path, port=8086).url == "http://127.0.0.1:8086/streamapp"
    assert (
        postgres.DevPostgres(home=tmp_path, port=5433).dsn
        == "postgresql://streamapp@127.0.0.1:5433/streamapp"
    )
