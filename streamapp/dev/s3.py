"""The development S3 server: S3Proxy from Maven Central, filesystem backend, on loopback."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from streamapp.dev.kafka import DevBrokerError, java_major_version, streamapp_home
from streamapp.dev.process import log_tail, owned_pid, port_in_use, terminate
from streamapp.dev.secure import write_secret

__all__ = [
    "DEFAULT_BUCKET",
    "DEFAULT_S3_PORT",
    "S3PROXY_VERSION",
    "DevS3",
    "DevS3Error",
    "S3Credentials",
    "S3Status",
    "fetch_s3proxy",
    "s3_answers",
]

S3PROXY_VERSION = "3.0.0"
DEFAULT_S3_PORT = 9000
#: the bucket `streamapp s3 up` creates (STREAMAPP_ARCHIVE_URL=s3://streamapp/archive)
DEFAULT_BUCKET = "streamapp"
_MIN_JAVA = 17
_MAIN = "org.gaul.s3proxy.Main"

Progress = Callable[[str], None]

_LOGBACK = """<configuration>
  <appender name="out" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%d{HH:mm:ss.SSS} %-5level %logger{20} - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="out"/></root>
</configuration>
"""


class DevS3Error(RuntimeError):
    """A dev S3 operation failed; the message says what to do."""


def fetch_s3proxy(home: Path | None = None, progress: Progress | None = None) -> Path:
    """Download S3Proxy and its jars with Maven once; return the directory holding them."""
    home = home or streamapp_home()
    libs = home / "s3proxy" / S3PROXY_VERSION / "libs"
    done = libs / ".complete"
    if done.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DevS3Error("mvn not found: install Maven (apt install maven) to fetch S3Proxy")
    say = progress or (lambda _msg: None)
    say(f"fetching S3Proxy {S3PROXY_VERSION} (about 170 jars) from Maven Central into {libs} ...")
    pom = libs.parent / "pom.xml"
    pom.parent.mkdir(parents=True, exist_ok=True)
    pom.write_text(resources.files("streamapp.dev").joinpath("s3proxy-pom.xml").read_text())
    staging = libs.with_name("libs.partial")
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [
        mvn, "-B", "-f", str(pom), "dependency:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={staging}",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL
    )
    assert proc.stdout is not None
    tail: list[str] = []
    for line in proc.stdout:
        tail = (tail + [line.rstrip()])[-30:]
    if proc.wait() != 0:
        raise DevS3Error("Maven could not fetch S3Proxy:\n" + "\n".join(tail))
    jars = sorted(p.name for p in staging.glob("*.jar"))
    if not any(j.startswith("s3proxy-") for j in jars):
        raise DevS3Error(f"Maven finished but no s3proxy jar is in {staging}")
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    done.write_text("\n".join(jars) + "\n")
    say(f"fetched {len(jars)} jars")
    return libs


def s3_answers(endpoint: str, timeout: float = 3.0) -> bool:
    """True when an HTTP server answers at ``endpoint`` (S3 refuses anonymous calls: 403 counts)."""
    try:
        with urllib.request.urlopen(endpoint, timeout=timeout) as resp:
            return bool(resp.status)
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class S3Credentials:
    """The access key pair the dev server accepts (generated once, kept in a 0600 file)."""

    access_key: str
    secret_key: str

    @classmethod
    def load_or_create(cls, path: Path) -> S3Credentials:
        if path.exists():
            values = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
            try:
                return cls(values["STREAMAPP_ARCHIVE_ACCESS_KEY"], values["STREAMAPP_ARCHIVE_SECRET_KEY"])
            except KeyError:
                pass  # damaged: a new pair below
        creds = cls("streamapp-" + secrets.token_hex(6), secrets.token_urlsafe(30))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_secret(
            path,
            f"STREAMAPP_ARCHIVE_ACCESS_KEY={creds.access_key}\n"
            f"STREAMAPP_ARCHIVE_SECRET_KEY={creds.secret_key}\n",
        )
        return creds


@dataclass(frozen=True)
class S3Status:
    """What `streamapp s3 status` reports."""

    running: bool
    pid: int | None
    endpoint: str
    data_dir: Path
    log_file: Path
    credentials_file: Path
    answers: bool

    def describe(self) -> str:
        if not self.running:
            return f"dev s3: stopped (data in {self.data_dir})"
        health = "answering" if self.answers else "NOT answering"
        return (
            f"dev s3: running, pid {self.pid}, S3Proxy {S3PROXY_VERSION} (filesystem) at {self.endpoint}, "
            f"{health}; data {self.data_dir}, credentials {self.credentials_file}, log {self.log_file}"
        )

    def usage(self, bucket: str = DEFAULT_BUCKET) -> str:
        """The settings that point the archive at this server."""
        return (
            f"point the archive at it: set -a; . {self.credentials_file}; set +a; "
            f"export STREAMAPP_ARCHIVE_URL=s3://{bucket}/archive STREAMAPP_ARCHIVE_ENDPOINT={self.endpoint}"
        )


class DevS3:
    """One S3Proxy process on a loopback port; its objects, pid, log and credentials under one directory."""

    def __init__(
        self, home: Path | None = None, port: int = DEFAULT_S3_PORT, host: str = "127.0.0.1",
        bucket: str = DEFAULT_BUCKET,
    ) -> None:  # fmt: skip
        self.home = home or streamapp_home()
        self.host = host
        self.port = port
        self.bucket = bucket
        self.state_dir = self.home / "s3" / f"s3-{port}"
        self.data_dir = self.state_dir / "data"
        self.pid_file = self.state_dir / "s3proxy.pid"
        self.log_file = self.state_dir / "s3proxy.log"
        self.properties_file = self.state_dir / "s3proxy.properties"
        self.credentials_file = self.state_dir / "credentials.env"
        self.logback_file = self.state_dir / "logback.xml"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def credentials(self) -> S3Credentials:
        return S3Credentials.load_or_create(self.credentials_file)

    def _marker(self) -> str:
        # on the java command line, so a reused pid is never mistaken for our server
        return f"-Dstreamapp.s3.state={self.state_dir}"

    def _pid(self) -> int | None:
        marker = self._marker().encode()
        return owned_pid(self.pid_file, lambda cmdline: marker in cmdline)

    def status(self) -> S3Status:
        pid = self._pid()
        return S3Status(
            running=pid is not None,
            pid=pid,
            endpoint=self.endpoint,
            data_dir=self.data_dir,
            log_file=self.log_file,
            credentials_file=self.credentials_file,
            answers=pid is not None and s3_answers(self.endpoint),
        )

    def _write_properties(self, creds: S3Credentials) -> None:
        # the secret lives in this private file, never on the command line
        write_secret(
            self.properties_file,
            "\n".join(
                [
                    f"s3proxy.endpoint=http://{self.host}:{self.port}",
                    "s3proxy.authorization=aws-v2-or-v4",
                    f"s3proxy.identity={creds.access_key}",
                    f"s3proxy.credential={creds.secret_key}",
                    # the "filesystem" provider is deprecated in S3Proxy 3: nio2 is its successor
                    "jclouds.provider=filesystem-nio2",
                    f"jclouds.filesystem.basedir={self.data_dir}",
                    "",
                ]
            ),
        )

    def command(self, libs: Path) -> list[str]:
        return [
            "java", "-Xms32m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true", self._marker(), f"-Dlogback.configurationFile={self.logback_file}",
            "-cp", f"{libs}/*", _MAIN, "--properties", str(self.properties_file),
        ]  # fmt: skip

    def up(self, progress: Progress | None = None, timeout: float = 60.0) -> S3Status:
        """Start S3Proxy unless it already runs (with the bucket made); return once it answers."""
        say = progress or (lambda _msg: None)
        if self._pid() is not None:
            say(f"dev s3 already running at {self.endpoint}")
            return self.status()
        try:
            major = java_major_version()
        except DevBrokerError as exc:
            raise DevS3Error(str(exc)) from None
        if major < _MIN_JAVA:
            raise DevS3Error(f"Java {major} found, S3Proxy {S3PROXY_VERSION} needs Java {_MIN_JAVA}+")
        if port_in_use(self.host, self.port):
            raise DevS3Error(
                f"port {self.host}:{self.port} is taken by another process: stop it, or pick a free "
                "port with `streamapp s3 up --port N`"
            )
        libs = fetch_s3proxy(self.home, say)
        # the filesystem backend: a bucket is a directory under the base directory
        (self.data_dir / self.bucket).mkdir(parents=True, exist_ok=True)
        self._write_properties(self.credentials())
        # without a configuration logback logs every request at DEBUG
        self.logback_file.write_text(_LOGBACK)
        started = time.monotonic()
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                self.command(libs), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.state_dir, start_new_session=True,
            )  # fmt: skip
        self.pid_file.write_text(str(proc.pid))
        say(f"starting S3Proxy {S3PROXY_VERSION} at {self.endpoint} (pid {proc.pid}) ...")
        while time.monotonic() < started + timeout:
            if proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise DevS3Error(
                    f"S3Proxy exited with code {proc.returncode}:\n{log_tail(self.log_file, 10)}"
                )
            if s3_answers(self.endpoint, timeout=1.0):
                say(f"dev s3 up at {self.endpoint} in {time.monotonic() - started:.1f} s")
                return self.status()
            time.sleep(0.2)
        self.down()
        raise DevS3Error(f"S3Proxy did not answer within {timeout:.0f} s (log {self.log_file})")

    def down(self, progress: Progress | None = None, timeout: float = 20.0) -> bool:
        """Stop the S3Proxy this state directory started (its objects stay); True when one was stopped."""
        say = progress or (lambda _msg: None)
        pid = self._pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            say("dev s3 is not running")
            return False
        if terminate(pid, timeout):
            say(f"S3Proxy did not stop in {timeout:.0f} s; killed it")
        self.pid_file.unlink(missing_ok=True)
        say(f"dev s3 stopped (pid {pid}); objects stay in {self.data_dir}")
        return True
