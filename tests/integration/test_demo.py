"""`streamapp demo` on the running broker: alerts show within 30 s and Ctrl-C leaves nothing behind."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from streamapp.dev.kafka import DevBroker, broker_answers, streamapp_home
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

FIRST_ALERT_WITHIN = 30.0  # the "Done when"


def _gone(pid: int) -> bool:
    """The process no longer runs (absent, or a zombie waiting for its parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return True


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return None


def _worker_log_excerpt(pid: int | None) -> str:
    """Problems and last lines of this run's worker in the demo's log (STREAMAPP_HOME/demo/worker.log)."""
    log = streamapp_home() / "demo" / "worker.log"
    if pid is None or not log.exists():
        return "(no worker log)"
    lines = log.read_text(errors="replace").splitlines()
    banners = [i for i, line in enumerate(lines) if line.startswith("| pid ")]
    mine = [i for i in banners if f" {pid} " in lines[i]]
    start = mine[-1] if mine else 0
    end = next((i for i in banners if i > start), len(lines))  # later runs append to the same log
    section = [line for line in lines[start:end] if not line.startswith(("|", "+"))]
    problems = [line for line in section if "ERROR" in line or "WARNING" in line or "Error" in line]
    return "\n".join([*problems, "...", *section[-15:]])


def _ours(pid: int) -> bool:
    try:
        return b"streamapp.cli" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False


def _ignore_sigint() -> None:
    """As a background job of a script starts it (SIGINT ignored): Ctrl-C must stop the demo anyway."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_demo_shows_alerts_within_30_s_and_sigint_stops_everything(kafka_bootstrap, names, tmp_path):
    env = {
        **os.environ,
        "STREAMAPP_BROKER": f"kafka://{kafka_bootstrap}",
        "STREAMAPP_APP_ID": names.app_id,
        "STREAMAPP_TOPIC_PREFIX": names.prefix,
        "STREAMAPP_WEB_PORT": str(free_port()),
        "STREAMAPP_DATA_DIR": str(tmp_path / "data"),
    }
    stderr_path = tmp_path / "demo.stderr"
    lines: queue.Queue[tuple[float, str | None]] = queue.Queue()
    output: list[str] = []
    child_pids: dict[str, int] = {}
    started = time.monotonic()
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamapp.cli", "demo", "--rate", "100"],
            env=env, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, text=True,
            start_new_session=True, preexec_fn=_ignore_sigint,
        )  # fmt: skip

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put((time.monotonic(), line.rstrip("\n")))
        lines.put((time.monotonic(), None))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()

    def take(until: float) -> tuple[float, str | None] | None:
        try:
            return lines.get(timeout=max(0.0, until - time.monotonic()))
        except queue.Empty:
            return None

    try:
        first_alert_after = None
        deadline = started + FIRST_ALERT_WITHIN
        while first_alert_after is None:
            item = take(deadline)
            if item is None:
                excerpt = _worker_log_excerpt(child_pids.get("worker"))
                raise AssertionError(
                    f"no brute_force alert within {FIRST_ALERT_WITHIN:.0f} s:\n" + "\n".join(output)
                    + "\n--- the demo's worker log ---\n" + excerpt
                )  # fmt: skip
            at, line = item
            assert line is not None, f"demo exited early ({proc.wait()}):\n" + "\n".join(output)
            output.append(line)
            for name, pattern in (("worker", r"worker started \(pid (\d+)"),
                                  ("generator", r"traffic generator started \(pid (\d+)")):  # fmt: skip
                if found := re.search(pattern, line):
                    child_pids[name] = int(found.group(1))
            if "brute_force" in line:
                first_alert_after = at - started
        assert set(child_pids) == {"worker", "generator"}, output
        assert first_alert_after <= FIRST_ALERT_WITHIN

        # let it run a little so the worker's memory reflects steady processing
        settle = time.monotonic() + 5
        while (item := take(settle)) is not None and item[1] is not None:
            output.append(item[1])
        worker_rss = _rss_mib(child_pids["worker"])
        broker_pid = DevBroker().status().pid if "STREAMAPP_TEST_BROKER" not in os.environ else None
        broker_rss = _rss_mib(broker_pid) if broker_pid else None
        print(
            f"\n[figures] first brute_force alert {first_alert_after:.1f} s after `streamapp demo`; "
            f"worker RSS {worker_rss:.0f} MiB; generator RSS {_rss_mib(child_pids['generator']):.0f} MiB"
            + (f"; broker RSS {broker_rss:.0f} MiB" if broker_rss else "")
        )

        os.kill(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=40)
        reader.join(timeout=10)
        while (item := take(time.monotonic())) is not None and item[1] is not None:
            output.append(item[1])
        errors = stderr_path.read_text(errors="replace")
        transcript = "\n".join(output) + "\n--- stderr ---\n" + errors
        assert code == 0, transcript
        assert "Traceback" not in transcript, transcript
        # the terminal shows alerts and the demo's lines; the Kafka clients' warnings go to demo.log
        library_marks = ("aiokafka", "not found in cluster metadata", "NotLeaderForPartition")
        library_lines = [line for line in transcript.splitlines() if any(m in line for m in library_marks)]
        assert not library_lines, transcript
        for name, pid in child_pids.items():
            assert _gone(pid), f"{name} (pid {pid}) still runs after the demo stopped:\n{transcript}"
        assert output[-1].startswith("demo stopped"), transcript
        # the demo found the broker running, so it must leave it running
        assert broker_answers(kafka_bootstrap), "the demo stopped a broker it did not start"
        if broker_pid:
            print(f"[figures] broker RSS after the demo test {_rss_mib(broker_pid):.0f} MiB")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for pid in child_pids.values():
            if not _gone(pid) and _ours(pid):
                os.killpg(pid, signal.SIGKILL)


def test_demo_says_when_its_worker_dies_and_stops_the_rest(kafka_bootstrap, names, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "STREAMAPP_BROKER": f"kafka://{kafka_bootstrap}",
        "STREAMAPP_APP_ID": names.app_id,
        "STREAMAPP_TOPIC_PREFIX": names.prefix,
        "STREAMAPP_WEB_PORT": str(port),
        "STREAMAPP_DATA_DIR": str(tmp_path / "data"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamapp.cli", "demo", "--rate", "50"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        start_new_session=True,
    )  # fmt: skip
    output: list[str] = []
    pids: dict[str, int] = {}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line.rstrip("\n"))
            for name, pattern in (("worker", r"worker started \(pid (\d+)"),
                                  ("generator", r"traffic generator started \(pid (\d+)")):  # fmt: skip
                if found := re.search(pattern, line):
                    pids[name] = int(found.group(1))
            if "the live page is up" in line:
                break
        transcript = "\n".join(output)
        assert f"open the live page: http://127.0.0.1:{port}/" in transcript
        assert f"the live page is up: http://127.0.0.1:{port}/" in transcript
        killed_at = time.monotonic()
        os.kill(pids["worker"], signal.SIGKILL)
        rest, _ = proc.communicate(timeout=60)
        output.extend(rest.splitlines())
        transcript = "\n".join(output)
        assert proc.returncode == 1, transcript
        assert time.monotonic() - killed_at < 30, transcript
        assert "streamapp demo: the worker exited (code -9)" in transcript
        log = streamapp_home() / "demo" / "worker.log"
        assert f"the last lines of its log ({log})" in transcript
        last_log_line = log.read_text().splitlines()[-1]
        assert f"  | {last_log_line}" in transcript  # the end of the worker's log is shown
        assert output[-1].startswith("demo stopped: no process left running"), transcript
        assert _gone(pids["generator"]), transcript
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for pid in pids.values():
            if not _gone(pid) and _ours(pid):
                os.killpg(pid, signal.SIGKILL)
