"""The embedded development schema registry: Apicurio Registry from Maven Central, in memory, on loopback."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from streamapp.dev.service import (
    DevService,
    DevServiceError,
    Progress,
    ServiceKind,
    ServiceStatus,
    http_answers,
    require_java,
    silent,
    streamapp_home,
)

__all__ = [
    "APICURIO_VERSION",
    "CCOMPAT_PATH",
    "DEFAULT_REGISTRY_PORT",
    "DEFAULT_REGISTRY_URL",
    "DevRegistry",
    "DevRegistryError",
    "RegistryStatus",
    "fetch_registry",
    "registry_answers",
]

#: 3.0.x is the newest line that runs on Java 17 (3.1+ is built for Java 21)
APICURIO_VERSION = "3.0.9"
_ARTIFACT = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
_RUNNER = f"apicurio-registry-app-{APICURIO_VERSION}-runner.jar"
_MIN_JAVA = 17
#: the Confluent-compatible API (what producers, consumers and streamapp talk to)
CCOMPAT_PATH = "/apis/ccompat/v7"
DEFAULT_REGISTRY_PORT = 8081
#: where `streamapp registry up` serves: the default of STREAMAPP_SCHEMA_REGISTRY_URL's users
DEFAULT_REGISTRY_URL = f"http://127.0.0.1:{DEFAULT_REGISTRY_PORT}{CCOMPAT_PATH}"

logger = logging.getLogger(__name__)


class DevRegistryError(DevServiceError):
    """A dev registry operation failed; the message says what to do."""


def _heap() -> str:
    return os.environ.get("STREAMAPP_REGISTRY_HEAP", "256m")


def fetch_registry(home: Path | None = None, progress: Progress | None = None) -> Path:
    """Download and unpack Apicurio Registry with Maven once; return the directory holding the runner jar."""
    home = home or streamapp_home()
    base = home / "registry" / APICURIO_VERSION
    app_dir = base / "app"
    done = app_dir / ".complete"
    if done.exists():
        return app_dir
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DevRegistryError("mvn not found: install Maven (apt install maven) to fetch Apicurio Registry")
    say = progress or silent
    download = base / "download"
    shutil.rmtree(download, ignore_errors=True)
    download.mkdir(parents=True)
    maven_log = base / "maven.log"
    say(f"fetching Apicurio Registry {APICURIO_VERSION} ({_ARTIFACT}, about 110 MB) from Maven Central ...")
    started = time.monotonic()
    cmd = [mvn, "-B", "dependency:copy", f"-Dartifact={_ARTIFACT}", f"-DoutputDirectory={download}"]
    with open(maven_log, "w") as log:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=base,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert proc.stdout is not None
        errors: list[str] = []
        for line in proc.stdout:
            log.write(line)
            if "apicurio-registry-app" in line and ("Downloading from" in line or "Downloaded from" in line):
                say("  " + line.strip())
            if line.startswith("[ERROR]") and len(errors) < 3:
                errors.append(line[len("[ERROR]") :].strip())
    if proc.wait() != 0:
        reason = errors[0] if errors else f"exit code {proc.returncode}"
        raise DevRegistryError(f"Maven could not fetch {_ARTIFACT}: {reason} (full output: {maven_log})")
    archives = list(download.glob("*.tar.gz"))
    if len(archives) != 1:
        raise DevRegistryError(f"Maven finished but {download} holds no single .tar.gz: {archives}")
    say(f"unpacking {archives[0].name} ...")
    staging = base / "app.partial"
    shutil.rmtree(staging, ignore_errors=True)
    with tarfile.open(archives[0]) as archive:
        archive.extractall(staging, filter="data")
    if not (staging / _RUNNER).is_file():
        raise DevRegistryError(f"the archive has no {_RUNNER}: unexpected layout in {staging}")
    shutil.rmtree(app_dir, ignore_errors=True)
    staging.rename(app_dir)
    shutil.rmtree(download, ignore_errors=True)  # the unpacked app is what we keep
    done.write_text(f"{_ARTIFACT}\n")
    say(f"fetched Apicurio Registry {APICURIO_VERSION} in {time.monotonic() - started:.1f} s into {app_dir}")
    return app_dir


def registry_answers(url: str, timeout: float = 3.0) -> bool:
    """True when a Confluent-compatible registry at ``url`` (ending in /apis/ccompat/v7) lists subjects."""
    return http_answers(f"{url}/subjects", 200, timeout)


@dataclass(frozen=True)
class RegistryStatus(ServiceStatus):
    """What `streamapp registry status` reports."""

    label: ClassVar[str] = "dev schema registry"

    url: str
    rss_mib: float | None = None

    def running_detail(self, health: str) -> str:
        memory = f", RSS {self.rss_mib:.0f} MiB" if self.rss_mib is not None else ""
        return (
            f"Apicurio Registry {APICURIO_VERSION} "
            f"(in memory) at {self.url}, {health}{memory}; log {self.log_file}"
        )

    def usage(self) -> str:
        return f"point workers at it: STREAMAPP_SCHEMA_REGISTRY_URL={self.url}"


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ValueError, IndexError):
        return None
    return None


class DevRegistry(DevService[RegistryStatus]):
    """One Apicurio Registry process on a loopback port; its pid and log live under one state directory.

    Storage is Apicurio's default: an in-memory H2 database, so every start begins empty.
    """

    kind = ServiceKind(
        "registry", "dev schema registry", "registry", DevRegistryError, port=DEFAULT_REGISTRY_PORT,
        state_prefix="registry-", start_timeout=90.0, probe_timeout=2.0,
        location="at {base_url}" + CCOMPAT_PATH,
        not_ready="the registry did not answer within {timeout:.0f} s (log {log_file})",
    )  # fmt: skip

    @property
    def url(self) -> str:
        """The Confluent-compatible API root: what STREAMAPP_SCHEMA_REGISTRY_URL points to."""
        return self.base_url + CCOMPAT_PATH

    def answers(self, timeout: float = 3.0) -> bool:
        return registry_answers(self.url, timeout)

    def _status(self, pid: int | None, answers: bool) -> RegistryStatus:
        rss = _rss_mib(pid) if pid is not None else None
        return RegistryStatus(pid, answers, self.log_file, None, url=self.url, rss_mib=rss)

    def command(self, app_dir: Path) -> list[str]:
        """The java command line that runs the registry."""
        heap = _heap()
        return [
            "java", "-Xms64m", f"-Xmx{heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Xss512k", "-XX:ReservedCodeCacheSize=64m", "-Djava.awt.headless=true",
            self._marker(),
            f"-Dquarkus.http.host={self.host}", f"-Dquarkus.http.port={self.port}",
            # in memory (Apicurio's default, spelled out): every start begins empty
            "-Dapicurio.storage.kind=sql", "-Dapicurio.storage.sql.kind=h2",
            # the default pool keeps 20 H2 connections open; a dev registry needs a few
            "-Dapicurio.datasource.jdbc.initial-size=2", "-Dapicurio.datasource.jdbc.min-size=2",
            "-Dapicurio.datasource.jdbc.max-size=10",
            "-Dquarkus.thread-pool.max-threads=16",
            "-jar", str(app_dir / _RUNNER),
        ]  # fmt: skip

    def _prepare(self, say: Progress) -> None:
        require_java(_MIN_JAVA, f"Apicurio Registry {APICURIO_VERSION}", DevRegistryError)

    def _start(self, say: Progress, timeout: float) -> subprocess.Popen[bytes]:
        app_dir = fetch_registry(self.home, say)
        proc = self._spawn(self.command(app_dir), cwd=self.state_dir)
        say(
            f"starting Apicurio Registry {APICURIO_VERSION} at {self.url} "
            f"(pid {proc.pid}, heap {_heap()}) ..."
        )
        return proc

    def _exited(self, returncode: int | None) -> str:
        return f"the registry exited with code {returncode}: {self._last_error()} (log {self.log_file})"

    def _last_error(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "no log"
        for line in reversed(lines):
            if "ERROR" in line or "Exception" in line:
                return line.strip()[:300]
        return lines[-1].strip()[:300] if lines else "empty log"
