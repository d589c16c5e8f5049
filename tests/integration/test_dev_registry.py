"""`streamapp registry up|down|status|fetch` driven as a user would: a second real registry on a free port."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamapp.dev.registry import APICURIO_VERSION, fetch_registry, registry_answers
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration


def _cli(*args: str, env: dict[str, str], timeout: float = 150.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamapp.cli", *args],
        env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return True


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("streamapp: error: "), lines[0]
    return lines[0]


def test_registry_up_status_down_on_a_free_port(schema_registry_url):
    # schema_registry_url: the session registry runs too, so this one must coexist with it
    fetch_registry()  # cached by the session fixture: `up` below must not download again
    env = dict(os.environ)
    port = free_port()
    url = f"http://127.0.0.1:{port}/apis/ccompat/v7"

    started = time.monotonic()
    up = _cli("registry", "up", "--port", str(port), env=env)
    elapsed = time.monotonic() - started
    assert up.returncode == 0, up.stderr
    try:
        assert "fetching" not in up.stderr  # the cached download is reused
        assert f"dev schema registry up at {url}" in up.stderr
        assert f"STREAMAPP_SCHEMA_REGISTRY_URL={url}" in up.stderr
        pid = int(re.search(r"pid (\d+)", up.stdout).group(1))  # type: ignore[union-attr]
        assert registry_answers(url)
        assert elapsed < 60, f"registry took {elapsed:.1f} s to answer"
        rss = _rss_mib(pid)
        assert rss < 450, f"registry RSS {rss:.0f} MiB: the heap is meant to be small"
        print(f"registry up in {elapsed:.1f} s (CLI), RSS {rss:.0f} MiB")

        status = _cli("registry", "status", "--port", str(port), env=env)
        assert status.returncode == 0
        assert (
            f"running, pid {pid}, Apicurio Registry {APICURIO_VERSION} (in memory) at {url}, answering"
            in (status.stdout)
        )
        again = _cli("registry", "up", "--port", str(port), env=env)
        assert again.returncode == 0 and "already running" in again.stderr
    finally:
        down = _cli("registry", "down", "--port", str(port), env=env)
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stderr
    assert _gone(pid)
    stopped = _cli("registry", "status", "--port", str(port), env=env)
    assert stopped.returncode == 3 and "stopped" in stopped.stdout
    assert not registry_answers(url, timeout=1)
    # the session registry was left alone
    assert registry_answers(schema_registry_url)


def test_registry_up_on_a_taken_port_is_a_one_line_refusal():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        refused = _cli("registry", "up", "--port", str(port), env=dict(os.environ))
    assert refused.returncode == 2
    line = _one_line_error(refused)
    assert f"port 127.0.0.1:{port} is taken" in line and "--port" in line


def test_schema_commands_without_a_registry_say_how_to_start_one(tmp_path):
    env = {**os.environ, "STREAMAPP_SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{free_port()}/apis/ccompat/v7"}
    schema = Path(__file__).resolve().parents[2] / "streamapp" / "schema" / "avsc" / "user-v1.avsc"
    refused = _cli("schema", "register", "--subject", "s-value", str(schema), env=env)
    assert refused.returncode == 2
    line = _one_line_error(refused)
    assert "cannot be reached" in line and "streamapp registry up" in line
    broken = tmp_path / "broken.avsc"
    broken.write_text('{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}')
    invalid = _cli("schema", "register", "--subject", "s-value", str(broken), env=env)
    assert invalid.returncode == 2
    assert "not a valid Avro schema" in _one_line_error(invalid)


def test_dlq_and_avro_produce_without_a_broker_are_one_line_refusals():
    env = {**os.environ, "STREAMAPP_BROKER": f"kafka://127.0.0.1:{free_port()}"}
    for args in (("dlq", "list"), ("dlq", "resubmit", "--all")):
        refused = _cli(*args, env=env)
        assert refused.returncode == 1
        assert "cannot reach the broker at kafka://127.0.0.1:" in _one_line_error(refused)
    produce = subprocess.run(
        [sys.executable, "-m", "streamapp.cli", "avro", "produce"],
        env=env, input='{"name": "ann", "age": 3}\n', capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert produce.returncode == 2
    assert "cannot produce to the broker" in _one_line_error(produce)
