"""One dev service: a server process with its state, pid file and log under ~/.streamapp/<service>/."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

from streamapp.dev.process import log_tail, owned_pid, port_in_use, terminate

__all__ = [
    "DevService",
    "DevServiceError",
    "Progress",
    "ServiceKind",
    "ServiceStatus",
    "debian_binary",
    "http_answers",
    "java_major_version",
    "require_java",
    "silent",
    "streamapp_home",
]

Progress = Callable[[str], None]


def silent(_message: str) -> None:
    """The progress callback of a caller that wants no progress lines."""


class DevServiceError(RuntimeError):
    """A dev service operation failed; the message says what to do."""


def streamapp_home() -> Path:
    """Directory for downloaded jars and dev service state (``STREAMAPP_HOME``)."""
    return Path(os.environ.get("STREAMAPP_HOME") or Path.home() / ".streamapp").expanduser()


def java_major_version(java: str = "java", error: type[DevServiceError] = DevServiceError) -> int:
    """The major version of the ``java`` on PATH, or raise ``error`` with what to install."""
    if shutil.which(java) is None:
        raise error("java not found: install Java 17 or newer (e.g. apt install openjdk-17-jre-headless)")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    # first line looks like: openjdk version "17.0.15" 2025-04-15  (or "1.8.0_392")
    try:
        quoted = out.split('"')[1]
        parts = quoted.split(".")
        return int(parts[1]) if parts[0] == "1" else int(parts[0].split("-")[0])
    except (IndexError, ValueError) as exc:
        raise error(f"cannot read the Java version from `java -version`: {out!r}") from exc


_NEWER_JDK = ": install a newer JDK or put it first on PATH"


def debian_binary(name: str, package: str, error: type[DevServiceError]) -> str:
    """Path of the server binary ``name``, or raise ``error`` with the package to install."""
    found = shutil.which(name)
    if found is None:
        raise error(f"{name} not found: install it with `apt-get install {package}`")
    return found


def http_answers(url: str, status: int = 200, timeout: float = 3.0) -> bool:
    """True when a GET of ``url`` answers ``status`` within ``timeout`` seconds: a server's health probe."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == status)
    except (OSError, ValueError):  # refused, timed out, another error status (HTTPError), a bad URL
        return False


def require_java(minimum: int, product: str, error: type[DevServiceError], advice: str = _NEWER_JDK) -> None:
    """Raise ``error`` unless the ``java`` on PATH is ``minimum`` or newer."""
    major = java_major_version(error=error)
    if major < minimum:
        raise error(f"Java {major} found, {product} needs Java {minimum}+{advice}")


@dataclass(frozen=True)
class ServiceStatus:
    """What `streamapp <service> status` reports: whether it runs, its pid, whether it answers."""

    #: what the messages call the service, e.g. "dev influx"
    label: ClassVar[str]
    #: the word for a server that answers its health probe
    healthy: ClassVar[str] = "answering"

    #: what "stopped (data in ...)" calls the files the server keeps
    kept: ClassVar[str] = "data"

    pid: int | None
    answers: bool
    log_file: Path
    #: where the server's data stays while it is stopped (None: nowhere, it is in memory)
    kept_in: Path | None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def describe(self) -> str:
        if not self.running:
            return f"{self.label}: stopped{self.stopped_detail()}"
        health = self.healthy if self.answers else f"NOT {self.healthy}"
        return f"{self.label}: running, pid {self.pid}, {self.running_detail(health)}"

    def stopped_detail(self) -> str:
        """What follows "stopped": where the data stays."""
        return f" ({self.kept} in {self.kept_in})" if self.kept_in is not None else ""

    def running_detail(self, health: str) -> str:
        """What follows the pid of a running server; ``health`` says whether it answers."""
        return f"{health}; log {self.log_file}"

    def usage(self) -> str:
        """How to point the workers at this server ('' when there is nothing to set)."""
        return ""


S = TypeVar("S", bound=ServiceStatus)


@dataclass(frozen=True)
class ServiceKind:
    """Which dev service a class runs: the names its files and messages use, and its timeouts."""

    #: the directory under STREAMAPP_HOME, and the command group: `streamapp <service> up`
    service: str
    #: what the messages call it, e.g. "dev influx"
    label: str
    #: what the messages call the process (e.g. "influxd did not stop"); lowercased, its pid and log files
    process: str
    error: type[DevServiceError] = DevServiceError
    #: the port it serves on unless told otherwise
    port: int = 0
    #: the state directory is <service>/<state_prefix><port>
    state_prefix: str = "port-"
    start_timeout: float = 60.0
    stop_timeout: float = 20.0
    #: how long one health probe may take while `up` waits for the server
    probe_timeout: float = 1.0
    #: where it serves, as the messages say it: of {host}, {port} and {base_url} (http://host:port)
    location: str = "on {host}:{port}"
    #: what `up` says when the server exits while starting, does not answer in time, answers; of
    #: {process}, {label}, {location}, {returncode}, {timeout}, {elapsed}, {log_file}, {log_tail}
    exited: str = "{process} exited with code {returncode}; last log lines:\n{log_tail}"
    not_ready: str = "{process} did not answer within {timeout:.0f} s:\n{log_tail}"
    ready: str = "{label} up {location} in {elapsed:.1f} s"


class DevService(Generic[S]):
    """A server process on a loopback port whose files live under one state directory.

    Subclasses say what the process is (``_owns``, ``answers``, ``_start``) and what their status
    holds (``_status``); starting, waiting until it answers, stopping and the pid bookkeeping are here.
    """

    kind: ClassVar[ServiceKind]
    #: the pause between health probes while `up` waits for the server
    poll_interval: ClassVar[float] = 0.25

    def __init__(
        self,
        home: Path | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
        state_dir: Path | None = None,
    ) -> None:
        kind = self.kind
        self.home = home or streamapp_home()
        self.host = host
        self.port = kind.port if port is None else port
        self.state_dir = state_dir or self.home / kind.service / f"{kind.state_prefix}{self.port}"
        self.pid_file = self.state_dir / f"{kind.process.lower()}.pid"
        self.log_file = self.state_dir / f"{kind.process.lower()}.log"

    # -- what a subclass says ------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """The root URL of a server that speaks HTTP."""
        return f"http://{self.host}:{self.port}"

    @property
    def location(self) -> str:
        """Where it serves, as the messages say it ("on host:port", "at http://...")."""
        return self.kind.location.format(host=self.host, port=self.port, base_url=self.base_url)

    def _marker(self) -> str:
        """A java system property naming the state directory: on the command line of a java server."""
        return f"-Dstreamapp.{self.kind.service}.state={self.state_dir}"

    def _owns(self, cmdline: list[bytes]) -> bool:
        """True when a process with this command line is the server this state directory started.

        Pids get reused: the marker (or a subclass's own test) tells our server from another process.
        """
        return self._marker().encode() in cmdline

    def answers(self, timeout: float = 3.0) -> bool:
        """True when the server answers its health probe."""
        raise NotImplementedError

    def _status(self, pid: int | None, answers: bool) -> S:
        raise NotImplementedError

    def _prepare(self, say: Progress) -> None:
        """Check and fetch what the server needs, before its port is checked."""

    def _start(self, say: Progress, timeout: float) -> subprocess.Popen[bytes] | None:
        """Write the files the server needs and start it (``_spawn``); the process, or None."""
        raise NotImplementedError

    def _on_ready(self, say: Progress, elapsed: float) -> None:
        """Once the server answers: say so (a subclass creates a database, grants ACLs)."""
        say(self._ready(elapsed))

    def _exited(self, returncode: int | None) -> str:
        return self._message(self.kind.exited, returncode=returncode)

    def _not_ready(self, timeout: float) -> str:
        return self._message(self.kind.not_ready, timeout=timeout)

    def _ready(self, elapsed: float) -> str:
        return self._message(self.kind.ready, elapsed=elapsed)

    def _message(self, template: str, **values: object) -> str:
        """One of the kind's messages, with the service's names, where it serves and its log filled in."""
        # the log is read only for a message that shows it (a failure)
        log_tail = self._log_tail() if "{log_tail}" in template else ""
        kind = self.kind
        return template.format(
            process=kind.process, label=kind.label, location=self.location, log_file=self.log_file,
            log_tail=log_tail, **values,
        )  # fmt: skip

    def _stopped_note(self) -> str:
        """What follows "stopped (pid N)", e.g. where the data stays."""
        return ""

    # -- process bookkeeping -------------------------------------------------------------
    def _pid(self) -> int | None:
        """The pid we started, if that process is still our server."""
        return owned_pid(self.pid_file, self._owns)

    def status(self) -> S:
        pid = self._pid()
        return self._status(pid, pid is not None and self.answers())

    def _log_tail(self, lines: int = 20) -> str:
        return log_tail(self.log_file, lines)

    # -- lifecycle -----------------------------------------------------------------------
    def up(self, progress: Progress | None = None, timeout: float | None = None, wait: bool = True) -> S:
        """Start the server unless it already runs; return once it answers (``wait``) or once started."""
        say = progress or silent
        timeout = self.kind.start_timeout if timeout is None else timeout
        if self._already_running(say):
            return self.status()
        self._prepare(say)
        self._check_ports()
        started = time.monotonic()
        proc = self._start(say, timeout)
        if wait:
            self._wait_ready(proc, started, timeout)
            self._on_ready(say, time.monotonic() - started)
        return self.status()

    def _already_running(self, say: Progress) -> bool:
        if self._pid() is None:
            return False
        say(f"{self.kind.label} already running {self.location}")
        return True

    def _check_ports(
        self, ports: Sequence[int] = (), advice: str = "a free port with `streamapp {service} up --port N`"
    ) -> None:
        for port in ports or (self.port,):
            if port_in_use(self.host, port):
                raise self.kind.error(
                    f"port {self.host}:{port} is taken by another process: stop it, or pick "
                    + advice.format(service=self.kind.service)
                )

    def _spawn(self, cmd: Sequence[str], cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``cmd`` in the background, its output appended to the log, its pid in the pid file."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd,
                start_new_session=True,  # Ctrl-C in the shell must not stop a background server
            )  # fmt: skip
        self.pid_file.write_text(str(proc.pid))
        return proc

    def _wait_ready(self, proc: subprocess.Popen[bytes] | None, started: float, timeout: float) -> None:
        """Return once the server answers; raise when ``proc`` exits or ``timeout`` passes (and stop it)."""
        while time.monotonic() < started + timeout:
            if proc is not None and proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise self.kind.error(self._exited(proc.returncode))
            if self.answers(timeout=self.kind.probe_timeout):
                return
            time.sleep(self.poll_interval)
        if proc is not None:
            self.down()
        raise self.kind.error(self._not_ready(timeout))

    def down(self, progress: Progress | None = None, timeout: float | None = None) -> bool:
        """Stop the server this state directory started (its data stays); True when one was stopped."""
        say = progress or silent
        pid = self._pid()
        if pid is None:
            self._forget_pid()
            say(f"{self.kind.label} is not running")
            return False
        self._stop(pid, self.kind.stop_timeout if timeout is None else timeout, say)
        say(f"{self.kind.label} stopped (pid {pid}){self._stopped_note()}")
        return True

    def _stop(self, pid: int, timeout: float, say: Progress) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if terminate(pid, timeout):
            say(f"{self.kind.process} did not stop in {timeout:.0f} s; killed it")
        self._forget_pid()

    def _forget_pid(self) -> None:
        self.pid_file.unlink(missing_ok=True)
