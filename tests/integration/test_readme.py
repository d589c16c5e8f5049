"""The README's "Using it" commands, run as written from a copy of the repository on a broker of their own."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from streamapp.dev.kafka import KAFKA_VERSION, DevBroker, fetch_kafka_jars
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Using it"


def usage_commands(readme: str) -> list[str]:
    """Every shell command in the ```sh blocks of the README's "Using it" section, in order.

    Backslash continuations are joined; comments and blank lines dropped.
    """
    section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.DOTALL):
        pending = ""
        for raw in block.splitlines():
            line = raw if pending else raw.strip()
            line = re.sub(r"\s+#.*$", "", line) if not line.startswith("#") else ""
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1].strip() + " "
                continue
            command = (pending + line.strip()).strip()
            pending = ""
            if command:
                commands.append(command)
    return commands


def test_usage_commands_are_found() -> None:
    commands = usage_commands((ROOT / "README.md").read_text())
    assert commands[0] == "make install"
    assert any(c.startswith("streamapp worker") for c in commands)
    assert any(c.startswith("curl") for c in commands)
    # the tour keeps every command it had when the reference moved to docs/: none dropped unseen
    assert len(commands) >= 19, commands


def _copy_repo(dest: Path) -> Path:
    """What a fresh clone holds (git's tracked files), plus this environment's virtualenv as .venv."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in files.decode().split("\0"):
        if name and (ROOT / name).is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target)
    (dest / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    return dest


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_readme_usage_commands_work_as_written(tmp_path: Path) -> None:
    """`make install` and `. .venv/bin/activate` are what made this environment: the first is checked
    with `make -n`, the second is sourced before every command. Everything else runs as written but for
    the ports (a broker of the test's own, free web ports: 9092, 9093 and 6066 may be taken) and
    `generate --duration 60`, which runs 5 s."""
    commands = usage_commands((ROOT / "README.md").read_text())
    repo = _copy_repo(tmp_path / "clone")
    home = tmp_path / "home"  # STREAMAPP_HOME: the broker's state and the demo's logs
    (home / "kafka" / KAFKA_VERSION).mkdir(parents=True)
    (home / "kafka" / KAFKA_VERSION / "libs").symlink_to(fetch_kafka_jars(), target_is_directory=True)
    port, controller, web, demo_web = free_port(), free_port(), free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STREAMAPP_")},
        "PYTHONPATH": str(repo),
        "STREAMAPP_HOME": str(home),
        "STREAMAPP_BROKER": f"kafka://127.0.0.1:{port}",
        "STREAMAPP_PARTITIONS": "2",
    }

    def rewrite(command: str) -> str:
        ports = f"--port {port} --controller-port {controller}"
        command = re.sub(r"^streamapp kafka (up|status|down)", rf"\g<0> {ports}", command)
        command = command.replace("127.0.0.1:9092", f"127.0.0.1:{port}").replace(":6066", f":{web}")
        command = command.replace("--web-port 6066", f"--web-port {web}")
        return command.replace("--duration 60", "--duration 5")

    transcript: list[str] = []

    def shell(command: str, timeout: float = 60, **kwargs: object) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["bash", "-c", f". .venv/bin/activate && {rewrite(command)}"], cwd=repo, env=env,
            capture_output=True, text=True, timeout=timeout, **kwargs,  # type: ignore[call-overload]
        )  # fmt: skip
        transcript.append(f"$ {command}\n{result.stdout}{result.stderr}")
        assert result.returncode == 0, "\n".join(transcript)
        return result

    def background(command: str, log: Path) -> subprocess.Popen[bytes]:
        with open(log, "wb") as out:
            return subprocess.Popen(
                ["bash", "-c", f". .venv/bin/activate && exec {rewrite(command)}"], cwd=repo, env=env,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    assert commands[:2] == ["make install", ". .venv/bin/activate"], commands
    subprocess.run(["make", "-n", "install"], cwd=repo, check=True, capture_output=True)
    worker_cmd = next(c for c in commands if c.startswith("streamapp worker"))
    demo_cmd = next(c for c in commands if c.startswith("streamapp demo"))
    down_cmd = next(c for c in commands if c.startswith("streamapp kafka down"))
    worker = demo = None
    try:
        for command in commands[2:]:
            if command in (down_cmd, demo_cmd):
                continue  # after the curls below, which need the broker and a worker
            if command == worker_cmd:
                worker = background(command, tmp_path / "worker.log")
                deadline = time.monotonic() + 90
                while _safe_get(f"http://127.0.0.1:{web}/ready")[0] != 200:
                    assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-4000:]
                    assert time.monotonic() < deadline, "worker not ready in 90 s"
                    time.sleep(0.5)
                # the relative --data-dir is taken relative to where the command runs
                data_dir = re.search(r"--data-dir (\S+)", command)
                assert data_dir and (repo / data_dir.group(1) / "tables").is_dir()
                continue
            result = shell(command)
            if command.startswith("curl localhost:6066/health"):
                assert '"ok"' in result.stdout
            if command.startswith("curl localhost:6066/ready"):
                assert result.stdout.strip() and "error" not in result.stdout
        assert worker is not None
        _stop(worker)
        demo = _run_demo(rewrite(demo_cmd), repo, {**env, "STREAMAPP_WEB_PORT": str(demo_web)})
        transcript.append(f"$ {demo_cmd}\n{demo}")
        assert "demo stopped" in demo, "\n".join(transcript)
        shell(down_cmd)
    finally:
        if worker is not None:
            _stop(worker)
        DevBroker(home=home, port=port, controller_port=controller).down()


def _safe_get(url: str) -> tuple[int, str]:
    try:
        return _get(url)
    except OSError:
        return 0, ""


def _stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _run_demo(command: str, repo: Path, env: dict[str, str]) -> str:
    """Run the demo until it shows its first alert, then Ctrl-C it; its output (exit 0 asserted)."""
    proc = subprocess.Popen(
        ["bash", "-c", f". .venv/bin/activate && exec {command}"], cwd=repo, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        start_new_session=True,
    )  # fmt: skip
    output: list[str] = []
    try:
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        while time.monotonic() < deadline and not any("brute_force" in line for line in output):
            line = proc.stdout.readline()
            if line:
                output.append(line.rstrip("\n"))
            elif proc.poll() is not None:
                break
            else:
                time.sleep(0.2)
        assert any("brute_force" in line for line in output), "\n".join(output)
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=45)
        output.extend(rest.splitlines())
        assert proc.returncode == 0, "\n".join(output)
        return "\n".join(output)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
