"""Processes of the bench: each contender runs in a process (group) of its own, with a log file."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["REPO", "Proc", "StreamappWorker", "free_port", "parse_metrics"]

logger = logging.getLogger("bench")

#: the repository root: contender modules run as ``python -m bench.<module>`` from here
REPO = Path(__file__).resolve().parent.parent

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text format -> {(name, labels): value}."""
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match:
            labels = frozenset(_LABEL.findall(match.group(2) or ""))
            try:
                samples[(match.group(1), labels)] = float(match.group(3))
            except ValueError:
                continue
    return samples


class Proc:
    """A child process in its own process group (so stopping it stops its children too)."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.cmd = cmd
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        for key in ("STREAMAPP_DATA_DIR", "BENCH_DATA_DIR"):  # faust makes the data dir, not its parents
            if key in self.env:
                Path(self.env[key]).parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.cmd, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        self.started_at = time.monotonic()
        logger.debug("%s: started pid %d: %s", self.name, self.proc.pid, " ".join(self.cmd))
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def rss_mb(self) -> float | None:
        """Resident memory (VmRSS) of the process, in MiB."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    kib = int(line.split()[1])
                    return kib / 1024 if kib else None  # 0 while the process is exiting
        except (FileNotFoundError, AssertionError):
            return None
        return None

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the process has used so far (its threads included)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, AssertionError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout: float = 30.0, sig: int = signal.SIGTERM) -> float:
        """Signal the process group, wait for the exit (SIGKILL after ``timeout``); seconds it took."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        started = time.monotonic()
        try:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("%s: did not stop in %.0f s; killing it", self.name, timeout)
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        except ProcessLookupError:
            pass
        return time.monotonic() - started

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the log, or from the last line naming an error on when there is one."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        errors = [i for i, line in enumerate(text) if "Error" in line or "ERROR" in line]
        start = errors[-1] if errors else len(text) - lines
        return "\n".join(text[max(0, start) : max(0, start) + lines])


class StreamappWorker(Proc):
    """A ``streamapp worker`` process (``python -m streamapp.cli worker``) with its web port."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path, web_port: int) -> None:
        super().__init__(name, [sys.executable, "-m", "streamapp.cli", "worker"], env, log_path)
        self.web_port = web_port

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}{path}", timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return parse_metrics(self.get("/metrics")[1].decode())

    def start_ready(self, timeout: float, attempts: int = 3, keep_state: bool = False) -> float:
        """Start and wait for ``/ready``; seconds from the (last) start. A worker that exits before it
        is ready (the shared broker timing out a topic creation, say) is started again, up to
        ``attempts`` times in all, with its data dir emptied first unless ``keep_state``."""
        for attempt in range(1, attempts + 1):
            if attempt > 1 and not keep_state:
                shutil.rmtree(self.env["STREAMAPP_DATA_DIR"], ignore_errors=True)
            self.start()
            try:
                return self.wait_ready(timeout)
            except RuntimeError as exc:
                if attempt == attempts:
                    raise
                logger.warning("%s: exited before ready, starting it again: %s", self.name, str(exc)[-300:])
        raise AssertionError("unreachable")

    def wait_ready(self, timeout: float, poll: float = 0.1) -> float:
        """Poll ``/ready`` until 200; seconds since the process started. Raises on exit or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.returncode()}:\n{self.log_tail()}")
            try:
                if self.get("/ready", timeout=2)[0] == 200:
                    return time.monotonic() - self.started_at
            except OSError:
                pass
            time.sleep(poll)
        raise TimeoutError(f"{self.name} not ready in {timeout:.0f} s:\n{self.log_tail()}")
