"""DevService: a real background process started, found by its pid file, reported and stopped."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import ClassVar

import pytest

from streamapp.dev.service import DevService, DevServiceError, Progress, ServiceKind, ServiceStatus


class WebError(DevServiceError):
    """The test service failed."""


class WebStatus(ServiceStatus):
    label: ClassVar[str] = "dev web"


class DevWeb(DevService[WebStatus]):
    """`python -m http.server` serving the state directory: a dev service in a few lines."""

    kind = ServiceKind("web", "dev web", "http.server", WebError, start_timeout=20.0, stop_timeout=5.0)

    def __init__(self, home: Path, port: int, exit_at_once: bool = False) -> None:
        super().__init__(home, port)
        self.exit_at_once = exit_at_once

    def _owns(self, cmdline: list[bytes]) -> bool:
        return b"http.server" in cmdline and str(self.state_dir).encode() in cmdline

    def answers(self, timeout: float = 3.0) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.port}/", timeout=timeout) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def _status(self, pid: int | None, answers: bool) -> WebStatus:
        return WebStatus(pid, answers, self.log_file, None)

    def _start(self, say: Progress, timeout: float) -> subprocess.Popen[bytes]:
        code = ["-c", "import sys; print('no'); sys.exit(4)"] if self.exit_at_once else []
        cmd = [sys.executable, *code, "-m", "http.server", "--bind", self.host, "--directory",
               str(self.state_dir), str(self.port)]  # fmt: skip
        return self._spawn(cmd)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_up_status_down_of_a_real_process(tmp_path: Path) -> None:
    web = DevWeb(tmp_path, _free_port())
    said: list[str] = []
    assert web.state_dir == tmp_path / "web" / f"port-{web.port}"
    assert web.status().describe() == "dev web: stopped"
    status = web.up(progress=said.append)
    try:
        assert status.running and status.answers
        assert status.describe() == f"dev web: running, pid {status.pid}, answering; log {web.log_file}"
        assert web.pid_file.read_text() == str(status.pid)
        assert said[-1].startswith(f"dev web up on 127.0.0.1:{web.port} in ")
        web.up(progress=said.append)
        assert said[-1] == f"dev web already running on 127.0.0.1:{web.port}"
    finally:
        assert web.down(progress=said.append)
    assert said[-1] == f"dev web stopped (pid {status.pid})"
    assert not web.pid_file.exists() and not web.status().running
    assert not web.down(progress=said.append)
    assert said[-1] == "dev web is not running"


def test_a_taken_port_is_refused_with_the_command_to_use(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        web = DevWeb(tmp_path, sock.getsockname()[1])
        with pytest.raises(WebError, match=r"is taken by another process: .* `streamapp web up --port N`"):
            web.up()


def test_a_server_that_exits_at_once_is_an_error_with_its_log(tmp_path: Path) -> None:
    web = DevWeb(tmp_path, _free_port(), exit_at_once=True)
    with pytest.raises(WebError, match=r"http.server exited with code 4; last log lines:\nno"):
        web.up()
    assert not web.pid_file.exists()


def test_a_pid_file_naming_someone_elses_process_is_not_ours(tmp_path: Path) -> None:
    web = DevWeb(tmp_path, _free_port())
    web.state_dir.mkdir(parents=True)
    web.pid_file.write_text("1")  # pid 1 runs, but it is not our server
    assert not web.status().running
    assert web.down() is False
    assert not web.pid_file.exists()
