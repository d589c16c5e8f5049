"""Ownership of dev service processes by pid file: a process still exec-ing is ours, not gone."""

from __future__ import annotations

import os
from pathlib import Path

from streamapp.dev import process


def _pid_file(tmp_path: Path) -> Path:
    pid_file = tmp_path / "service.pid"
    pid_file.write_text(str(os.getpid()))  # a process that surely runs: this one
    return pid_file


def test_a_process_whose_command_line_is_empty_for_a_moment_is_still_ours(tmp_path, monkeypatch):
    # what a `java` just started by Popen shows for a moment, read right after the pid file is written
    reads = iter([b"", b"", b"java\0-cp\0libs/*\0kafka.Kafka\0/state/server.properties\0"])
    monkeypatch.setattr(process, "_read_cmdline", lambda _pid: next(reads))

    owner = process.owned_pid(_pid_file(tmp_path), lambda cmdline: b"kafka.Kafka" in cmdline)

    assert owner == os.getpid()


def test_a_process_whose_command_line_stays_empty_is_not_ours(tmp_path, monkeypatch):
    monkeypatch.setattr(process, "EXEC_WINDOW_SECONDS", 0.05)
    monkeypatch.setattr(process, "_read_cmdline", lambda _pid: b"")

    assert process.owned_pid(_pid_file(tmp_path), lambda cmdline: b"kafka.Kafka" in cmdline) is None


def test_a_process_with_another_command_line_is_not_ours(tmp_path):
    assert process.owned_pid(_pid_file(tmp_path), lambda cmdline: b"kafka.Kafka" in cmdline) is None
