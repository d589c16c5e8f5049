"""The development InfluxDB 1.x: Debian's `influxd` with a generated config under STREAMAPP_HOME."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.parse
import urllib.request
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
)

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


class DevInfluxError(DevServiceError):
    """A dev InfluxDB operation failed; the message says what to do."""


def influxd_binary() -> str:
    """Path of ``influxd``, or raise with the package to install."""
    return debian_binary("influxd", "influxdb", DevInfluxError)


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
class InfluxStatus(ServiceStatus):
    """What `streamapp influx status` reports."""

    label: ClassVar[str] = "dev influx"

    url: str

    def running_detail(self, health: str) -> str:
        return (
            f"InfluxDB 1.x, {health}; "
            f"STREAMAPP_INFLUX_URL={self.url} (data {self.kept_in}, log {self.log_file})"
        )

    def usage(self) -> str:
        return f"point workers at it: STREAMAPP_INFLUX_URL={self.url}"


class DevInflux(DevService[InfluxStatus]):
    """One influxd whose config, data, pid and log live under one state directory."""

    kind = ServiceKind(
        "influx", "dev influx", "influxd", DevInfluxError, port=DEFAULT_INFLUX_PORT, stop_timeout=30.0,
        location="on {base_url}", exited="influxd exited with code {returncode}:\n{log_tail}",
        not_ready="influxd did not answer in {timeout:.0f} s:\n{log_tail}",
        ready="dev influx ready in {elapsed:.1f} s",
    )  # fmt: skip

    def __init__(self, home: Path | None = None, port: int | None = None, host: str = "127.0.0.1") -> None:
        super().__init__(home, port, host)
        self.config_file = self.state_dir / "influxdb.conf"

    @property
    def url(self) -> str:
        """The sink's setting: the server, with the database as path."""
        return f"{self.base_url}/{DATABASE}"

    def _owns(self, cmdline: list[bytes]) -> bool:
        return cmdline[0].endswith(b"influxd") and str(self.config_file).encode() in cmdline

    def answers(self, timeout: float = 2.0) -> bool:
        """True when ``/ping`` answers 204."""
        return http_answers(f"{self.base_url}/ping", 204, timeout)

    def query(self, q: str, database: str | None = DATABASE, timeout: float = 10.0) -> dict[str, Any]:
        """Run an InfluxQL statement through ``/query``; return the decoded JSON answer."""
        params = {"q": q, "epoch": "s", **({"db": database} if database else {})}
        data = urllib.parse.urlencode(params).encode()
        with urllib.request.urlopen(f"{self.base_url}/query", data=data, timeout=timeout) as response:
            body: dict[str, Any] = json.loads(response.read())
        return body

    def _status(self, pid: int | None, answers: bool) -> InfluxStatus:
        return InfluxStatus(pid, answers, self.log_file, self.state_dir, url=self.url)

    def _prepare(self, say: Progress) -> None:
        influxd_binary()

    def _start(self, say: Progress, timeout: float) -> subprocess.Popen[bytes]:
        """Start influxd with a generated config (the database is created once it answers)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # the RPC (backup) port is not used by anything here: any free one
        self.config_file.write_text(
            influx_config(self.state_dir, self.host, self.port, _free_port(self.host))
        )
        proc = self._spawn([influxd_binary(), "-config", str(self.config_file)])
        say(f"starting InfluxDB on {self.base_url} (pid {proc.pid})")
        return proc

    def _on_ready(self, say: Progress, elapsed: float) -> None:
        self.query(f'CREATE DATABASE "{DATABASE}"', database=None)
        super()._on_ready(say, elapsed)
