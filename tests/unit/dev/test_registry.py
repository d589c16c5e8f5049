"""The dev registry's command line, checks and errors, without starting Java or Maven."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamapp.dev.registry import DevRegistry, DevRegistryError, fetch_registry


def _fake_tool(directory: Path, name: str, script: str) -> None:
    tool = directory / name
    tool.write_text(f"#!/bin/sh\n{script}\n")
    tool.chmod(0o755)


def test_command_runs_the_runner_jar_in_memory_with_a_small_heap(tmp_path, monkeypatch):
    monkeypatch.delenv("STREAMAPP_REGISTRY_HEAP", raising=False)
    registry = DevRegistry(home=tmp_path, port=18123)
    cmd = registry.command(tmp_path / "app")
    assert cmd[0] == "java" and "-Xmx256m" in cmd
    assert cmd[-2:] == ["-jar", str(tmp_path / "app" / "apicurio-registry-app-3.0.9-runner.jar")]
    assert "-Dquarkus.http.port=18123" in cmd and "-Dquarkus.http.host=127.0.0.1" in cmd
    assert "-Dapicurio.storage.kind=sql" in cmd and "-Dapicurio.storage.sql.kind=h2" in cmd
    assert registry.url == "http://127.0.0.1:18123/apis/ccompat/v7"
    monkeypatch.setenv("STREAMAPP_REGISTRY_HEAP", "192m")
    assert "-Xmx192m" in registry.command(tmp_path / "app")


def test_status_of_a_registry_never_started_or_whose_pid_is_not_ours(tmp_path):
    registry = DevRegistry(home=tmp_path, port=18124)
    assert not registry.status().running
    assert registry.status().describe() == "dev schema registry: stopped"
    registry.state_dir.mkdir(parents=True)
    registry.pid_file.write_text("1")  # pid 1 runs, but it is not our java
    assert not registry.status().running
    assert registry.down() is False


def test_fetch_without_maven_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DevRegistryError, match=r"mvn not found: install Maven"):
        fetch_registry(home=tmp_path / "home")


def test_a_failed_maven_download_is_one_clear_line(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_tool(
        bin_dir,
        "mvn",
        "echo '[INFO] Scanning'; echo '[ERROR] Failed to execute goal: Could not resolve'; exit 1",
    )
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    with pytest.raises(DevRegistryError) as caught:
        fetch_registry(home=tmp_path / "home")
    message = str(caught.value)
    assert "\n" not in message
    assert "Maven could not fetch io.apicurio:apicurio-registry-app:3.0.9:tar.gz:all" in message
    assert "Failed to execute goal: Could not resolve" in message and "maven.log" in message


def test_old_java_is_refused_before_anything_starts(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_tool(bin_dir, "java", "echo 'openjdk version \"11.0.2\" 2019-01-15' >&2")
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    with pytest.raises(DevRegistryError, match=r"Java 11 found, Apicurio Registry 3.0.9 needs Java 17\+"):
        DevRegistry(home=tmp_path, port=18125).up()
