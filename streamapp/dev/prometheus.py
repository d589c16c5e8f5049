"""The development Prometheus: Debian's `prometheus` binary, run on loopback, scraping the workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from streamapp.dev.service import (
    DevService,
    DevServiceError,
    Progress,
    ServiceKind,
    ServiceStatus,
    debian_binary,
    http_answers,
    silent,
)

__all__ = [
    "DEFAULT_PROMETHEUS_PORT",
    "DEFAULT_SCRAPE_INTERVAL",
    "DEFAULT_TARGET",
    "DevPrometheus",
    "DevPrometheusError",
    "PrometheusStatus",
    "prometheus_binary",
    "scrape_config",
]

DEFAULT_PROMETHEUS_PORT = 9090
DEFAULT_TARGET = "127.0.0.1:6066"
DEFAULT_SCRAPE_INTERVAL = "2s"


class DevPrometheusError(DevServiceError):
    """A dev Prometheus operation failed; the message says what to do."""


def prometheus_binary() -> str:
    """Path of the ``prometheus`` server binary, or raise with the package to install."""
    return debian_binary("prometheus", "prometheus", DevPrometheusError)


def _check_target(target: str) -> str:
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in target:
        raise DevPrometheusError(f"target {target!r} is not host:port")
    return target


def scrape_config(targets: Sequence[str], interval: str = DEFAULT_SCRAPE_INTERVAL) -> str:
    """prometheus.yml scraping ``/metrics`` of each worker ``host:port`` every ``interval``."""
    listed = ", ".join(json.dumps(_check_target(t)) for t in targets)
    return "\n".join(
        [
            "# written by `streamapp prometheus up`; rewritten (and reloaded) when the targets change",
            "global:",
            f"  scrape_interval: {interval}",
            f"  scrape_timeout: {interval}",
            f"  evaluation_interval: {interval}",
            "scrape_configs:",
            "  - job_name: streamapp",
            "    metrics_path: /metrics",
            "    static_configs:",
            f"      - targets: [{listed}]",
            "",
        ]
    )


@dataclass(frozen=True)
class PrometheusStatus(ServiceStatus):
    """What `streamapp prometheus status` reports."""

    label: ClassVar[str] = "dev prometheus"
    healthy: ClassVar[str] = "ready"

    url: str
    config_file: Path
    targets: tuple[str, ...]

    def running_detail(self, health: str) -> str:
        return (
            f"on {self.url}, {health}; scraping "
            f"{', '.join(self.targets) or 'nothing'}; config {self.config_file}, log {self.log_file}"
        )


class DevPrometheus(DevService[PrometheusStatus]):
    """One Prometheus server whose config, data, pid and log live under one state directory."""

    kind = ServiceKind(
        "prometheus", "dev prometheus", "prometheus", DevPrometheusError, port=DEFAULT_PROMETHEUS_PORT,
        location="on {base_url}", not_ready="prometheus was not ready in time:\n{log_tail}",
        ready="{label} ready {location} in {elapsed:.1f} s",
    )  # fmt: skip

    def __init__(self, home: Path | None = None, port: int | None = None, host: str = "127.0.0.1") -> None:
        super().__init__(home, port, host)
        self.config_file = self.state_dir / "prometheus.yml"
        self.data_dir = self.state_dir / "data"
        # what `up` starts with: the config, and the targets and interval it names
        self._config = ""
        self._scraping = ""

    @property
    def url(self) -> str:
        return self.base_url

    def _owns(self, cmdline: list[bytes]) -> bool:
        return cmdline[0].endswith(b"prometheus") and f"--config.file={self.config_file}".encode() in cmdline

    def targets(self) -> tuple[str, ...]:
        """The targets in the current config file."""
        try:
            text = self.config_file.read_text()
        except FileNotFoundError:
            return ()
        for line in text.splitlines():
            if line.strip().startswith("- targets:"):
                return tuple(json.loads(line.split(":", 1)[1]))
        return ()

    def answers(self, timeout: float = 2.0) -> bool:
        """True when Prometheus answers ``/-/ready`` with 200."""
        return http_answers(f"{self.url}/-/ready", 200, timeout)

    def _status(self, pid: int | None, answers: bool) -> PrometheusStatus:
        return PrometheusStatus(
            pid, answers, self.log_file, self.data_dir, url=self.url, config_file=self.config_file,
            targets=self.targets(),
        )  # fmt: skip

    # -- lifecycle -----------------------------------------------------------------------
    def up(  # type: ignore[override]
        self,
        targets: Sequence[str] = (DEFAULT_TARGET,),
        interval: str = DEFAULT_SCRAPE_INTERVAL,
        progress: Progress | None = None,
        timeout: float | None = None,
    ) -> PrometheusStatus:
        """Start Prometheus scraping ``targets`` (or reload the running one with them); wait until ready."""
        say = progress or silent
        self._config = scrape_config(targets, interval)
        self._scraping = f"{', '.join(targets)} every {interval}"
        pid = self._pid()
        if pid is None:
            return super().up(say, timeout)
        if self.config_file.read_text() != self._config:
            self.config_file.write_text(self._config)
            os.kill(pid, signal.SIGHUP)  # Prometheus re-reads its config on SIGHUP
            say(f"dev prometheus on {self.url} now scrapes {', '.join(targets)}")
        else:
            say(f"dev prometheus already running on {self.url}")
        self._wait_ready(None, time.monotonic(), self.kind.start_timeout if timeout is None else timeout)
        return self.status()

    def _prepare(self, say: Progress) -> None:
        prometheus_binary()

    def _start(self, say: Progress, timeout: float) -> subprocess.Popen[bytes]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self._config)
        proc = self._spawn(
            [
                prometheus_binary(),
                f"--config.file={self.config_file}",
                f"--storage.tsdb.path={self.data_dir}",
                "--storage.tsdb.retention.time=2d",
                f"--web.listen-address={self.host}:{self.port}",
                "--log.level=warn",
            ]
        )
        say(f"starting Prometheus on {self.url} (pid {proc.pid}), scraping {self._scraping}")
        return proc

    # -- HTTP API ------------------------------------------------------------------------
    def query(self, expr: str, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Run an instant PromQL query; return ``data.result`` (vector samples)."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.loads(response.read())
        if body.get("status") != "success":
            raise DevPrometheusError(f"query {expr!r} failed: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result
