"""Background processes of the dev services: ownership by pid file, stopping, ports and logs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["is_gone", "log_tail", "owned_pid", "port_in_use", "stop_child", "terminate"]


def port_in_use(host: str, port: int) -> bool:
    """Something accepts connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def is_gone(pid: int) -> bool:
    """The process no longer runs (absent, or a zombie its parent has not reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return True


def owned_pid(pid_file: Path, owns: Callable[[list[bytes]], bool]) -> int | None:
    """The pid in ``pid_file`` if that process still runs and ``owns(its command line)``.

    Pids get reused: only a process whose arguments name our own state counts as ours.
    """
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])  # postmaster.pid: the pid is its first line
    except (FileNotFoundError, PermissionError, ValueError):
        return None
    raw = _cmdline(pid)
    return pid if raw is not None and not is_gone(pid) and owns(raw.split(b"\0")) else None


#: how long a live process may show an empty command line before it counts as not ours
EXEC_WINDOW_SECONDS = 2.0


def _cmdline(pid: int) -> bytes | None:
    """The raw ``/proc/<pid>/cmdline`` (None when the process is gone).

    Right after ``Popen`` returns, a starting ``java`` shows an empty command line for a moment
    (it was read as "not ours", and a cluster node just started was reported as exited): an
    empty one is read again until it fills or ``EXEC_WINDOW_SECONDS`` pass (kernel threads stay empty).
    """
    deadline = time.monotonic() + EXEC_WINDOW_SECONDS
    while True:
        raw = _read_cmdline(pid)
        if raw or raw is None or is_gone(pid) or time.monotonic() > deadline:
            return raw
        time.sleep(0.01)


def _read_cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return None


def terminate(pid: int, timeout: float) -> bool:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; True when it had to be killed."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not is_gone(pid):
        time.sleep(0.1)
    if is_gone(pid):
        return False
    os.kill(pid, signal.SIGKILL)
    return True


def log_tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except (FileNotFoundError, PermissionError):
        return "(no log)"


def stop_child(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Stop a child started in its own session (and its children): SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
