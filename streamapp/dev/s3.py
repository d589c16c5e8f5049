"""The development S3 server: S3Proxy from Maven Central, filesystem backend, on loopback."""

from __future__ import annotations

import secrets
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from streamapp.dev.maven import fetch_jars
from streamapp.dev.secure import write_secret
from streamapp.dev.service import (
    DevService,
    DevServiceError,
    Progress,
    ServiceKind,
    ServiceStatus,
    require_java,
    streamapp_home,
)

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

_LOGBACK = """<configuration>
  <appender name="out" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%d{HH:mm:ss.SSS} %-5level %logger{20} - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="out"/></root>
</configuration>
"""


class DevS3Error(DevServiceError):
    """A dev S3 operation failed; the message says what to do."""


def fetch_s3proxy(home: Path | None = None, progress: Progress | None = None) -> Path:
    """Download S3Proxy and its jars with Maven once; return the directory holding them."""
    libs = (home or streamapp_home()) / "s3proxy" / S3PROXY_VERSION / "libs"
    announce = f"fetching S3Proxy {S3PROXY_VERSION} (about 170 jars) from Maven Central into {libs} ..."
    return fetch_jars(libs, "s3proxy-pom.xml", "S3Proxy", "s3proxy", DevS3Error, progress, announce)


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
class S3Status(ServiceStatus):
    """What `streamapp s3 status` reports."""

    label: ClassVar[str] = "dev s3"

    endpoint: str
    credentials_file: Path

    def running_detail(self, health: str) -> str:
        return (
            f"S3Proxy {S3PROXY_VERSION} (filesystem) at {self.endpoint}, "
            f"{health}; data {self.kept_in}, credentials {self.credentials_file}, log {self.log_file}"
        )

    def usage(self, bucket: str = DEFAULT_BUCKET) -> str:
        """The settings that point the archive at this server."""
        return (
            f"point the archive at it: set -a; . {self.credentials_file}; set +a; "
            f"export STREAMAPP_ARCHIVE_URL=s3://{bucket}/archive STREAMAPP_ARCHIVE_ENDPOINT={self.endpoint}"
        )


class DevS3(DevService[S3Status]):
    """One S3Proxy process on a loopback port; its objects, pid, log and credentials under one directory."""

    kind = ServiceKind(
        "s3", "dev s3", "S3Proxy", DevS3Error, port=DEFAULT_S3_PORT, state_prefix="s3-",
        location="at {base_url}", not_ready="S3Proxy did not answer within {timeout:.0f} s (log {log_file})",
    )  # fmt: skip

    def __init__(
        self, home: Path | None = None, port: int | None = None, host: str = "127.0.0.1",
        bucket: str = DEFAULT_BUCKET,
    ) -> None:  # fmt: skip
        super().__init__(home, port, host)
        self.bucket = bucket
        self.data_dir = self.state_dir / "data"
        self.properties_file = self.state_dir / "s3proxy.properties"
        self.credentials_file = self.state_dir / "credentials.env"
        self.logback_file = self.state_dir / "logback.xml"

    @property
    def endpoint(self) -> str:
        return self.base_url

    def credentials(self) -> S3Credentials:
        return S3Credentials.load_or_create(self.credentials_file)

    def answers(self, timeout: float = 3.0) -> bool:
        return s3_answers(self.endpoint, timeout)

    def _status(self, pid: int | None, answers: bool) -> S3Status:
        return S3Status(
            pid, answers, self.log_file, self.data_dir, endpoint=self.endpoint,
            credentials_file=self.credentials_file,
        )  # fmt: skip

    def _write_properties(self, creds: S3Credentials) -> None:
        # the secret lives in this private file, never on the command line
        write_secret(
            self.properties_file,
            "\n".join(
                [
                    f"s3proxy.endpoint={self.base_url}",
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

    def _prepare(self, say: Progress) -> None:
        require_java(_MIN_JAVA, f"S3Proxy {S3PROXY_VERSION}", DevS3Error, advice="")

    def _start(self, say: Progress, timeout: float) -> subprocess.Popen[bytes]:
        """Start S3Proxy with the bucket made (a directory under the filesystem backend's base)."""
        libs = fetch_s3proxy(self.home, say)
        (self.data_dir / self.bucket).mkdir(parents=True, exist_ok=True)
        self._write_properties(self.credentials())
        # without a configuration logback logs every request at DEBUG
        self.logback_file.write_text(_LOGBACK)
        proc = self._spawn(self.command(libs), cwd=self.state_dir)
        say(f"starting S3Proxy {S3PROXY_VERSION} at {self.endpoint} (pid {proc.pid}) ...")
        return proc

    def _exited(self, returncode: int | None) -> str:
        return f"S3Proxy exited with code {returncode}:\n{self._log_tail(10)}"

    def _stopped_note(self) -> str:
        return f"; objects stay in {self.data_dir}"
