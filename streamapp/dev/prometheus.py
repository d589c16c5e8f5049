"""The development Prometheus: Debian's `prometheus` binary, run on loopback, scraping the workers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamapp.dev.kafka import streamapp_home
from streamapp.dev.process import log_tail, owned_pid, port_in_use, terminate

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
_INSTALL_HINT = "apt-get install prometheus"

Progress = Callable[[str], None]


class DevPrometheusError(RuntimeError):
    """A dev Prometheus operation failed; the message says what to do."""


def prometheus_binary() -> str:
    """Path of the ``prometheus`` server binary, or raise with the package to install."""
    found = shutil.which("prometheus")
    if found is None:
        raise DevPrometheusError(f"prometheus not found: install it with `{_INSTALL_HINT}`")
    return found


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
class PrometheusStatus:
    """What `streamapp prometheus status` reports."""

    running: bool
    pid: int | None
    url: str
    ready: bool
    config_file: Path
    data_dir: Path
    log_file: Path
    targets: tuple[str, ...]

    def describe(self) -> str:
        if not self.running:
            return f"dev prometheus: stopped (data in {self.data_dir})"
        health = "ready" if self.ready else "NOT ready"
        return (
            f"dev prometheus: running, pid {self.pid}, on {self.url}, {health}; scraping "
            f"{', '.join(self.targets) or 'nothing'}; config {self.config_file}, log {self.log_file}"
        )


class DevPrometheus:
    """One Prometheus server whose config, data, pid and log live under one state directory."""

    def __init__(
        self, home: Path | None = None, port: int = DEFAULT_PROMETHEUS_PORT, host: str = "127.0.0.1"
    ) -> None:
        self.home = home or streamapp_home()
        self.host = host
        self.port = port
        self.state_dir = self.home / "prometheus" / f"port-{port}"
        self.config_file = self.state_dir / "prometheus.yml"
        self.data_dir = self.state_dir / "data"
        self.pid_file = self.state_dir / "prometheus.pid"
        self.log_file = self.state_dir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- process bookkeeping -------------------------------------------------------------
    def _pid(self) -> int | None:
        """The pid we started, if that process is still our Prometheus."""
        config = f"--config.file={self.config_file}".encode()
        return owned_pid(
            self.pid_file,
            lambda cmdline: cmdline[0].endswith(b"prometheus") and config in cmdline,
        )

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

    def is_ready(self, timeout: float = 2.0) -> bool:
        """True when Prometheus answers ``/-/ready`` with 200."""
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=timeout) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def status(self) -> PrometheusStatus:
        pid = self._pid()
        return PrometheusStatus(
            running=pid is not None,
            pid=pid,
            url=self.url,
            ready=pid is not None and self.is_ready(),
            config_file=self.config_file,
            data_dir=self.data_dir,
            log_file=self.log_file,
            targets=self.targets(),
        )

    # -- lifecycle -----------------------------------------------------------------------
    def up(
        self,
        targets: Sequence[str] = (DEFAULT_TARGET,),
        interval: str = DEFAULT_SCRAPE_INTERVAL,
        progress: Progress | None = None,
        timeout: float = 60.0,
    ) -> PrometheusStatus:
        """Start Prometheus scraping ``targets`` (or reload the running one with them); wait until ready."""
        say = progress or (lambda _msg: None)
        config = scrape_config(targets, interval)
        pid = self._pid()
        if pid is not None:
            if self.config_file.read_text() != config:
                self.config_file.write_text(config)
                os.kill(pid, signal.SIGHUP)  # Prometheus re-reads its config on SIGHUP
                say(f"dev prometheus on {self.url} now scrapes {', '.join(targets)}")
            else:
                say(f"dev prometheus already running on {self.url}")
            self._wait_ready(None, time.monotonic() + timeout)
            return self.status()
        binary = prometheus_binary()
        if port_in_use(self.host, self.port):
            raise DevPrometheusError(
                f"port {self.host}:{self.port} is taken by another process: stop it, or pick a free "
                "port with `streamapp prometheus up --port N`"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(config)
        started = time.monotonic()
        cmd = [
            binary,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.data_dir}",
            "--storage.tsdb.retention.time=2d",
            f"--web.listen-address={self.host}:{self.port}",
            "--log.level=warn",
        ]
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in the shell must not stop a background server
            )  # fmt: skip
        self.pid_file.write_text(str(proc.pid))
        scraped = ", ".join(targets)
        say(f"starting Prometheus on {self.url} (pid {proc.pid}), scraping {scraped} every {interval}")
        self._wait_ready(proc, started + timeout)
        say(f"dev prometheus ready on {self.url} in {time.monotonic() - started:.1f} s")
        return self.status()

    def _wait_ready(self, proc: subprocess.Popen[bytes] | None, deadline: float) -> None:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise DevPrometheusError(
                    f"prometheus exited with code {proc.returncode}; last log lines:\n{self._log_tail()}"
                )
            if self.is_ready(timeout=1.0):
                return
            time.sleep(0.2)
        if proc is not None:
            self.down()
        raise DevPrometheusError(f"prometheus was not ready in time:\n{self._log_tail()}")

    def down(self, progress: Progress | None = None, timeout: float = 20.0) -> bool:
        """Stop the Prometheus this state directory started; True when one was stopped."""
        say = progress or (lambda _msg: None)
        pid = self._pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            say("dev prometheus is not running")
            return False
        if terminate(pid, timeout):
            say(f"prometheus did not stop in {timeout:.0f} s; killed it")
        self.pid_file.unlink(missing_ok=True)
        say(f"dev prometheus stopped (pid {pid})")
        return True

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

    def _log_tail(self, lines: int = 20) -> str:
        return log_tail(self.log_file, lines)
