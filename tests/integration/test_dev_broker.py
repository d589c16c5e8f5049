"""`streamapp kafka up|down|status|fetch` driven as a user would: a second real broker on free ports."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamapp.dev.kafka import KAFKA_VERSION, broker_answers, fetch_kafka_jars
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration


def _cli(*args: str, env: dict[str, str], timeout: float = 150.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamapp.cli", *args],
        env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _gone(pid: int) -> bool:
    """The process no longer runs (absent, or a zombie waiting for its parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return True


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The refusal is exactly one `streamapp: error:` line on stderr, with no traceback anywhere."""
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("streamapp: error: "), lines[0]
    return lines[0]


def _home_with_jars(tmp_path: Path) -> Path:
    """A fresh STREAMAPP_HOME that reuses the already fetched jars (nothing is downloaded again)."""
    real_libs = fetch_kafka_jars()  # default home: the jars the session broker runs from
    home = tmp_path / "home"
    version_dir = home / "kafka" / KAFKA_VERSION
    version_dir.mkdir(parents=True)
    (version_dir / "libs").symlink_to(real_libs, target_is_directory=True)
    assert (version_dir / "libs" / ".complete").exists()
    return home


def test_up_status_down_a_second_broker_on_free_ports(tmp_path):
    home = _home_with_jars(tmp_path)
    port, controller_port = free_port(), free_port()
    env = {**os.environ, "STREAMAPP_HOME": str(home)}
    ports = ["--port", str(port), "--controller-port", str(controller_port)]
    bootstrap = f"127.0.0.1:{port}"
    try:
        started = time.monotonic()
        up = _cli("kafka", "up", *ports, env=env)
        wall = time.monotonic() - started
        assert up.returncode == 0, up.stdout + up.stderr
        reported = re.search(r"dev broker up on \S+ in ([\d.]+) s", up.stderr)
        assert reported, up.stderr
        assert broker_answers(bootstrap)

        status = _cli("kafka", "status", *ports, env=env)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "running" in status.stdout and "answering" in status.stdout, status.stdout
        found = re.search(r"pid (\d+)", status.stdout)
        assert found, status.stdout
        pid = int(found.group(1))
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert b"kafka.Kafka" in cmdline and str(home).encode() in cmdline
        print(
            f"\n[figures] dev broker up: {float(reported.group(1)):.1f} s to answering "
            f"(CLI wall time {wall:.1f} s); broker RSS after start {_rss_mib(pid):.0f} MiB"
        )

        again = _cli("kafka", "up", *ports, env=env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "already running" in again.stderr
        status = _cli("kafka", "status", *ports, env=env)
        assert status.returncode == 0 and f"pid {pid}," in status.stdout, status.stdout

        # a port held by someone else, as the client port and as the controller port
        with socket.socket() as other:
            other.bind(("127.0.0.1", 0))
            other.listen()
            taken = str(other.getsockname()[1])
            for args in (["--port", taken, "--controller-port", str(free_port())],
                         ["--port", str(free_port()), "--controller-port", taken]):  # fmt: skip
                refused = _cli("kafka", "up", *args, env=env)
                assert refused.returncode == 2, refused.stdout + refused.stderr
                line = _one_line_error(refused)
                assert "taken" in line and taken in line, line
        assert broker_answers(bootstrap), "a refused `up` must not disturb the running broker"

        down = _cli("kafka", "down", *ports, env=env)
        assert down.returncode == 0, down.stdout + down.stderr
        assert f"pid {pid}" in down.stderr
        deadline = time.monotonic() + 10
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(pid), f"broker pid {pid} still runs after `down`"

        status = _cli("kafka", "status", *ports, env=env)
        assert status.returncode == 3, status.stdout + status.stderr
        assert "stopped" in status.stdout
    finally:
        _cli("kafka", "down", *ports, env=env)


def test_up_refuses_java_older_than_17(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    java = bin_dir / "java"
    java.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    java.chmod(0o755)
    home = tmp_path / "home"
    env = {
        **os.environ,
        "STREAMAPP_HOME": str(home),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    refused = _cli("kafka", "up", "--port", str(free_port()), "--controller-port", str(free_port()), env=env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    line = _one_line_error(refused)
    assert "Java 17" in line and "Java 11" in line, line
    assert not (home / "kafka").exists(), "nothing may be fetched or started before the Java check"


@pytest.mark.parametrize("command", ["fetch", "up"])
def test_missing_maven_is_a_one_line_error(tmp_path, command):
    real_java = shutil.which("java")
    assert real_java, "the integration tests need Java 17+ on PATH"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").symlink_to(os.path.realpath(real_java))
    home = tmp_path / "home"
    env = {**os.environ, "STREAMAPP_HOME": str(home), "PATH": str(bin_dir)}
    args = ["kafka", command]
    if command == "up":
        args += ["--port", str(free_port()), "--controller-port", str(free_port())]
    refused = _cli(*args, env=env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    line = _one_line_error(refused)
    assert "Maven" in line, line
    assert not (home / "kafka" / KAFKA_VERSION / "libs").exists()
