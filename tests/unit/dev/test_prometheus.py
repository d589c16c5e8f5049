"""`streamapp prometheus`: the generated scrape config, and one-line errors when it cannot start."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from streamapp.cli import main
from streamapp.dev.prometheus import DevPrometheus, DevPrometheusError, prometheus_binary, scrape_config


def test_scrape_config_is_valid_for_promtool(tmp_path: Path) -> None:
    config = tmp_path / "prometheus.yml"
    config.write_text(scrape_config(["127.0.0.1:6066", "worker-2.example:6067"], "2s"))
    check = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    parsed = yaml.safe_load(config.read_text())
    assert parsed["global"]["scrape_interval"] == "2s"
    (job,) = parsed["scrape_configs"]
    assert job["static_configs"] == [{"targets": ["127.0.0.1:6066", "worker-2.example:6067"]}]


@pytest.mark.parametrize("target", ["localhost", "http://127.0.0.1:6066", "h:0", "h:port", ":6066"])
def test_a_target_must_be_host_and_port(target: str) -> None:
    with pytest.raises(DevPrometheusError, match="is not host:port"):
        scrape_config([target])


def test_missing_binary_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DevPrometheusError, match="apt-get install prometheus"):
        prometheus_binary()
    env = {"PATH": str(tmp_path), "STREAMAPP_HOME": str(tmp_path)}
    result = CliRunner().invoke(main, ["prometheus", "up", "--port", "1"], env=env)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "streamapp: error: prometheus not found: install it with `apt-get install prometheus`"
    ]


def test_status_of_a_prometheus_that_never_ran(tmp_path: Path) -> None:
    env = {"STREAMAPP_HOME": str(tmp_path)}
    result = CliRunner().invoke(main, ["prometheus", "status", "--port", "19999"], env=env)
    assert result.exit_code == 3
    assert "dev prometheus: stopped" in result.output
    assert not DevPrometheus(home=tmp_path, port=19999).down()
