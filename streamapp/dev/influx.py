"""The development InfluxDB 1.x: Debian's `influxd` with a generated config under STREAMAPP_HOME."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamapp.dev.kafka import streamapp_home
from streamapp.dev.process import log_tail, owned_pid, port_in_use, terminate

__all__ = [
    "DEFAULT_INFLUX_PORT",
    "DevInflux",
    "DevInfluxError",
    "InfluxStatus",
    "influx_config",
    "influxd_binary",
]

DEFAULT_INFLUX_PORT = 8086
DATABASE = "streamapp"
_INSTALL_HINT = "apt-get install influxdb"

Progress = Callable[[str], None]


class DevInfluxError(RuntimeError):
    """A dev InfluxDB operation failed; the message says what to do."""


def influxd_binary() -> str:
    """Path of ``influxd``, or raise with the package to install."""
    found = shutil.which("influxd")
    if found is None:
        raise DevInfluxError(f"influxd not found: install it with `{_INSTALL_HINT}`")
    return found


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def influx_config(state_dir: Path, host: str, port: int, rpc_port: int) -> str:
    """influxdb.conf: data under ``state_dir``, HTTP on ``host:port``, no reporting, no self-monitoring."""
    return "\n".join(
        [
            "# written by `streamapp influx up`",
            "reporting-disabled = true",
            f'bind-address = "{host}:{rpc_port}"',
            "[meta]",
            f'  dir = "{state_dir / "meta"}"',
            "[data]",
            f'  dir = "{state_dir / "data"}"',
            f'  wal-dir = "{state_dir / "wal"}"',
            "  query-log-enabled = false",
            "  cache-max-memory-size = 268435456",
            "[monitor]",
            "  store-enabled = false",
            "[http]",
            "  enabled = true",
            f'  bind-address = "{host}:{port}"',
            "  auth-enabled = false",
            "  log-enabled = false",
            "[continuous_queries]",
            "  enabled = false",
            "",
        ]
    )


@dataclass(frozen=True)
class InfluxStatus:
    """What `streamapp influx status` reports."""

    running: bool
    pid: int | None
    url: str
    answers: bool
    state_dir: Path
    log_file: Path

    def describe(self) -> str:
        if not self.running:
            return f"dev influx: stopped (data in {self.state_dir})"
        health = "answering" if self.answers else "NOT answering"
        return (
            f"dev influx: running, pid {self.pid}, InfluxDB 1.x, {health}; "
            f"STREAMAPP_INFLUX_URL={self.url} (data {self.state_dir}, log {self.log_file})"
        )


class DevInflux:
    """One influxd whose config, data, pid and log live under one state directory."""

    def __init__(
        self, home: Path | None = None, port: int = DEFAULT_INFLUX_PORT, host: str = "127.0.0.1"
    ) -> None:
        self.home = home or streamapp_home()
        self.host = host
        self.port = port
        self.state_dir = self.home / "influx" / f"port-{port}"
        self.config_file = self.state_dir / "influxdb.conf"
        self.pid_file = self.state_dir / "influxd.pid"
        self.log_file = self.state_dir / "influxd.log"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The sink's setting: the server, with the database as path."""
        return f"{self.base_url}/{DATABASE}"

    def _pid(self) -> int | None:
        config = str(self.config_file).encode()
        return owned_pid(self.pid_file, lambda cmdline: cmdline[0].endswith(b"influxd") and config in cmdline)

    def answers(self, timeout: float = 2.0) -> bool:
        """True when ``/ping`` answers 204."""
        try:
            with urllib.request.urlopen(f"{self.base_url}/ping", timeout=timeout) as response:
                return bool(response.status == 204)
        except (OSError, urllib.error.URLError):
            return False

    def query(self, q: str, database: str | None = DATABASE, timeout: float = 10.0) -> dict[str, Any]:
        """Run an InfluxQL statement through ``/query``; return the decoded JSON answer."""
        params = {"q": q, "epoch": "s", **({"db": database} if database else {})}
        data = urllib.parse.urlencode(params).encode()
        with urllib.request.urlopen(f"{self.base_url}/query", data=data, timeout=timeout) as response:
            body: dict[str, Any] = json.loads(response.read())
        return body

    def status(self) -> InfluxStatus:
        pid = self._pid()
        return InfluxStatus(
            running=pid is not None,
            pid=pid,
            url=self.url,
            answers=pid is not None and self.answers(),
            state_dir=self.state_dir,
            log_file=self.log_file,
        )

    def up(self, progress: Progress | None = None, timeout: float = 60.0) -> InfluxStatus:
        """Start influxd with a generated config, wait until it answers, create the database."""
        say = progress or (lambda _msg: None)
        if self._pid() is not None:
            say(f"dev influx already running on {self.base_url}")
            return self.status()
        binary = influxd_binary()
        if port_in_use(self.host, self.port):
            raise DevInfluxError(
                f"port {self.host}:{self.port} is taken by another process: stop it, or pick a free "
                "port with `streamapp influx up --port N`"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # the RPC (backup) port is not used by anything here: any free one
        config = influx_config(self.state_dir, self.host, self.port, _free_port(self.host))
        self.config_file.write_text(config)
        started = time.monotonic()
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                [binary, "-config", str(self.config_file)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in the shell must not stop a background server
            )  # fmt: skip
        self.pid_file.write_text(str(proc.pid))
        say(f"starting InfluxDB on {self.base_url} (pid {proc.pid})")
        deadline = started + timeout
        while not self.answers(timeout=1.0):
            if proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise DevInfluxError(f"influxd exited with code {proc.returncode}:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                self.down()
                raise DevInfluxError(f"influxd did not answer in {timeout:.0f} s:\n{self._log_tail()}")
            time.sleep(0.2)
        self.query(f'CREATE DATABASE "{DATABASE}"', database=None)
        say(f"dev influx ready in {time.monotonic() - started:.1f} s")
        return self.status()

    def down(self, progress: Progress | None = None, timeout: float = 30.0) -> bool:
        """Stop the influxd this state directory started; True when one was stopped."""
        say = progress or (lambda _msg: None)
        pid = self._pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            say("dev influx is not running")
            return False
        if terminate(pid, timeout):
            say(f"influxd did not stop in {timeout:.0f} s; killed it")
        self.pid_file.unlink(missing_ok=True)
        say(f"dev influx stopped (pid {pid})")
        return True

    def _log_tail(self, lines: int = 20) -> str:
        return log_tail(self.log_file, lines)
