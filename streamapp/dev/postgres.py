"""The development PostgreSQL: Debian's server binaries, a cluster under STREAMAPP_HOME, on loopback."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from streamapp.dev.kafka import streamapp_home
from streamapp.dev.process import port_in_use

__all__ = [
    "DEFAULT_POSTGRES_PORT",
    "DevPostgres",
    "DevPostgresError",
    "PostgresStatus",
    "postgres_bin_dir",
]

DEFAULT_POSTGRES_PORT = 5432
#: the role and database the sink uses (trust authentication on loopback: a dev server)
ROLE = "streamapp"
DATABASE = "streamapp"
#: PostgreSQL refuses to run as root: as root, the cluster belongs to this OS user
_OS_USER = "postgres"
_INSTALL_HINT = "apt-get install postgresql"

Progress = Callable[[str], None]


class DevPostgresError(RuntimeError):
    """A dev PostgreSQL operation failed; the message says what to do."""


def postgres_bin_dir() -> Path:
    """Directory with ``initdb``, ``pg_ctl`` and ``postgres`` (the newest Debian version), or raise."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3].split(".")[0])
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    if on_path is not None:
        return Path(os.path.realpath(on_path)).parent
    raise DevPostgresError(f"PostgreSQL server binaries (pg_ctl, initdb) not found: `{_INSTALL_HINT}`")


@dataclass(frozen=True)
class PostgresStatus:
    """What `streamapp postgres status` reports."""

    running: bool
    pid: int | None
    dsn: str
    answers: bool
    data_dir: Path
    log_file: Path

    def describe(self) -> str:
        if not self.running:
            return f"dev postgres: stopped (data in {self.data_dir})"
        health = "answering" if self.answers else "NOT answering"
        return (
            f"dev postgres: running, pid {self.pid}, {health}; STREAMAPP_POSTGRES_DSN={self.dsn} "
            f"(data {self.data_dir}, log {self.log_file})"
        )


class DevPostgres:
    """One PostgreSQL cluster whose data, socket and log live under one state directory."""

    def __init__(
        self, home: Path | None = None, port: int = DEFAULT_POSTGRES_PORT, host: str = "127.0.0.1"
    ) -> None:
        self.home = home or streamapp_home()
        self.host = host
        self.port = port
        self.state_dir = self.home / "postgres" / f"port-{port}"
        self.data_dir = self.state_dir / "data"
        self.log_file = self.state_dir / "postgres.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://{ROLE}@{self.host}:{self.port}/{DATABASE}"

    # -- running commands as the cluster's owner -----------------------------------------
    def _as_owner(self, argv: Sequence[str]) -> list[str]:
        if os.geteuid() != 0:
            return list(argv)
        try:
            pwd.getpwnam(_OS_USER)
        except KeyError:
            raise DevPostgresError(
                f"running as root needs the OS user {_OS_USER!r} (created by `{_INSTALL_HINT}`)"
            ) from None
        runuser = shutil.which("runuser") or shutil.which("su")
        if runuser is None:
            raise DevPostgresError("running as root needs `runuser` (util-linux) to start PostgreSQL")
        if runuser.endswith("runuser"):
            return [runuser, "-u", _OS_USER, "--", *argv]
        return [runuser, _OS_USER, "-s", "/bin/sh", "-c", " ".join(_quote(a) for a in argv)]

    def _run(self, argv: Sequence[str], timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._as_owner(argv), capture_output=True, text=True, timeout=timeout, check=False,
            stdin=subprocess.DEVNULL, cwd="/",
        )  # fmt: skip

    def _prepare_dirs(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        owner = pwd.getpwnam(_OS_USER)
        os.chown(self.state_dir, owner.pw_uid, owner.pw_gid)
        # the owner must be able to reach its directory through every parent
        for parent in self.state_dir.parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                raise DevPostgresError(
                    f"{parent} is not reachable for the OS user {_OS_USER!r} that runs PostgreSQL: "
                    "point STREAMAPP_HOME somewhere it can reach (e.g. /tmp/streamapp) or `chmod o+x` it"
                )

    # -- lifecycle -----------------------------------------------------------------------
    def _pid(self) -> int | None:
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError, PermissionError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            return None
        if cmdline and cmdline[0].endswith(b"postgres") and str(self.data_dir).encode() in cmdline:
            return pid
        return None

    def answers(self, timeout: float = 3.0) -> bool:
        """True when the server accepts connections (``pg_isready``)."""
        try:
            pg_isready = postgres_bin_dir() / "pg_isready"
        except DevPostgresError:
            return False
        done = subprocess.run(
            [str(pg_isready), "-h", self.host, "-p", str(self.port), "-d", DATABASE, "-U", ROLE,
             "-t", str(max(1, int(timeout)))],
            capture_output=True, check=False,
        )  # fmt: skip
        return done.returncode == 0

    def status(self) -> PostgresStatus:
        pid = self._pid()
        return PostgresStatus(
            running=pid is not None,
            pid=pid,
            dsn=self.dsn,
            answers=pid is not None and self.answers(),
            data_dir=self.data_dir,
            log_file=self.log_file,
        )

    def up(self, progress: Progress | None = None, timeout: float = 90.0) -> PostgresStatus:
        """Create the cluster on first use, start it and wait until it accepts connections."""
        say = progress or (lambda _msg: None)
        if self._pid() is not None:
            say(f"dev postgres already running on {self.host}:{self.port}")
            return self.status()
        bindir = postgres_bin_dir()
        if port_in_use(self.host, self.port):
            raise DevPostgresError(
                f"port {self.host}:{self.port} is taken by another process: stop it, or pick a free "
                "port with `streamapp postgres up --port N`"
            )
        self._prepare_dirs()
        fresh = not (self.data_dir / "PG_VERSION").exists()
        if fresh:
            say(f"creating a PostgreSQL cluster in {self.data_dir}")
            done = self._run(
                [str(bindir / "initdb"), "-D", str(self.data_dir), "-U", ROLE, "--auth=trust",
                 "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
            )  # fmt: skip
            if done.returncode != 0:
                raise DevPostgresError(f"initdb failed:\n{done.stdout}{done.stderr}")
        options = (
            f"-c listen_addresses={self.host} -p {self.port} -c unix_socket_directories='' "
            "-c fsync=on -c max_connections=50 -c shared_buffers=64MB"
        )
        started = time.monotonic()
        done = self._run(
            [str(bindir / "pg_ctl"), "start", "-D", str(self.data_dir), "-l", str(self.log_file),
             "-o", options, "-w", "-t", str(int(timeout))],
            timeout=timeout + 10,
        )  # fmt: skip
        if done.returncode != 0:
            raise DevPostgresError(f"pg_ctl start failed:\n{done.stdout}{done.stderr}\n{self._log_tail()}")
        if fresh:
            created = subprocess.run(
                [str(bindir / "createdb"), "-h", self.host, "-p", str(self.port), "-U", ROLE, DATABASE],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if created.returncode != 0 and "already exists" not in created.stderr:
                raise DevPostgresError(f"createdb failed: {created.stderr.strip()}")
        say(f"dev postgres ready in {time.monotonic() - started:.1f} s")
        return self.status()

    def down(self, progress: Progress | None = None, timeout: float = 60.0) -> bool:
        """Stop the server (fast shutdown: open sessions are ended); True when one was stopped."""
        say = progress or (lambda _msg: None)
        pid = self._pid()
        if pid is None:
            say("dev postgres is not running")
            return False
        done = self._run(
            [str(postgres_bin_dir() / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast",
             "-w", "-t", str(int(timeout))],
            timeout=timeout + 10,
        )  # fmt: skip
        if done.returncode != 0:
            raise DevPostgresError(f"pg_ctl stop failed:\n{done.stdout}{done.stderr}")
        say(f"dev postgres stopped (pid {pid})")
        return True

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except (FileNotFoundError, PermissionError):
            return "(no log)"


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\"'\"'") + "'"
