"""The development PostgreSQL: Debian's server binaries, a cluster under STREAMAPP_HOME, on loopback."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from streamapp.dev.service import DevService, DevServiceError, Progress, ServiceKind, ServiceStatus

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


class DevPostgresError(DevServiceError):
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
class PostgresStatus(ServiceStatus):
    """What `streamapp postgres status` reports."""

    label: ClassVar[str] = "dev postgres"

    dsn: str

    def running_detail(self, health: str) -> str:
        return f"{health}; STREAMAPP_POSTGRES_DSN={self.dsn} (data {self.kept_in}, log {self.log_file})"

    def usage(self) -> str:
        return f"point workers at it: STREAMAPP_POSTGRES_DSN={self.dsn}"


class DevPostgres(DevService[PostgresStatus]):
    """One PostgreSQL cluster whose data, socket and log live under one state directory.

    pg_ctl starts and stops the server, and the server writes its own pid file (postmaster.pid).
    """

    kind = ServiceKind(
        "postgres", "dev postgres", "postgres", DevPostgresError, port=DEFAULT_POSTGRES_PORT,
        start_timeout=90, stop_timeout=60, ready="{label} ready in {elapsed:.1f} s",
    )  # fmt: skip

    def __init__(self, home: Path | None = None, port: int | None = None, host: str = "127.0.0.1") -> None:
        super().__init__(home, port, host)
        self.data_dir = self.state_dir / "data"
        self.pid_file = self.data_dir / "postmaster.pid"

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
    def _owns(self, cmdline: list[bytes]) -> bool:
        return cmdline[0].endswith(b"postgres") and str(self.data_dir).encode() in cmdline

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

    def _status(self, pid: int | None, answers: bool) -> PostgresStatus:
        return PostgresStatus(pid, answers, self.log_file, self.data_dir, dsn=self.dsn)

    def _prepare(self, say: Progress) -> None:
        postgres_bin_dir()

    def _start(self, say: Progress, timeout: float) -> None:
        """Create the cluster on first use and start it with pg_ctl (which waits until it runs)."""
        bindir = postgres_bin_dir()
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

    def _stop(self, pid: int, timeout: float, say: Progress) -> None:
        """Fast shutdown: open sessions are ended."""
        done = self._run(
            [str(postgres_bin_dir() / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast",
             "-w", "-t", str(int(timeout))],
            timeout=timeout + 10,
        )  # fmt: skip
        if done.returncode != 0:
            raise DevPostgresError(f"pg_ctl stop failed:\n{done.stdout}{done.stderr}")

    def _forget_pid(self) -> None:
        """postmaster.pid belongs to the server: it removes it itself."""


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\"'\"'") + "'"
