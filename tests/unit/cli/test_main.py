"""`python -m streamapp.cli`: the same command line as the `streamapp` entry point."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from tests.unit.cli.test_dev_commands import STOPPED


def test_python_dash_m_runs_the_same_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streamapp.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    for command in (*STOPPED, "schema", "avro", "dlq", "archive", "batch", "detections", "worker",
                    "generate", "demo", "replay"):  # fmt: skip
        assert f"  {command} " in done.stdout


def test_importing_the_main_module_runs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # faust's autodiscovery imports every module of the package while the worker starts
    monkeypatch.setattr(sys, "argv", ["streamapp", "--no-such-option"])
    sys.modules.pop("streamapp.cli.__main__", None)
    importlib.import_module("streamapp.cli.__main__")
