"""A throwaway PostgreSQL cluster from Debian's packages, for tests.

initdb into a fresh temporary directory, listen on a free loopback port (TCP only), trust
authentication, no durability (fsync off): a test database, nothing more. PostgreSQL refuses to
run as root, so as root the server runs as the `postgres` OS user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path


class PgServerError(RuntimeError):
    pass


def find_bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin with initdb in it."""
    found = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0,
    )
    if not found:
        raise PgServerError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); "
            "./scripts/test installs it: apt-get install -y postgresql"
        )
    return found[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def others_can_enter(path: Path) -> bool:
    """Every directory from / to `path` is searchable by any user."""
    return all(p.stat().st_mode & 0o001 for p in [path.resolve(), *path.resolve().parents])


class PgServer:
    """`start()`, then `create_database()` for URLs, then `stop()` (which also removes the files)."""

    def __init__(self, bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir or find_bin_dir()
        self.as_root = os.geteuid() == 0
        base = tempfile.gettempdir()
        if self.as_root and not others_can_enter(Path(base)):
            base = "/tmp"  # the postgres user must reach its data directory
        self.dir = Path(tempfile.mkdtemp(prefix="pynchy-pg-", dir=base))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = 0
        self.started = False

    # The server's files belong to the user it runs as.
    def _run(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(a) for a in args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=self.dir, check=False)
        if check and proc.returncode != 0:
            raise PgServerError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}{self._log()}")
        return proc

    def _log(self) -> str:
        try:
            return f"\n--- {self.log} ---\n{self.log.read_text()[-4000:]}"
        except OSError:
            return ""

    def start(self) -> None:
        if self.as_root:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise PgServerError("running as root and there is no `postgres` user to run the server as") from None
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run(
            self.bin_dir / "initdb",
            "-D",
            self.data,
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                "-c unix_socket_directories=''",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
                # Not UTC: timestamps must survive as instants whatever the server's zone.
                "-c timezone=Asia/Kolkata",
            ]
        )
        # The port is free when chosen; another process may take it before the server binds: retry.
        last: PgServerError | None = None
        for _ in range(5):
            self.port = free_port()
            try:
                self._run(
                    self.bin_dir / "pg_ctl",
                    "start",
                    "-D",
                    self.data,
                    "-l",
                    self.log,
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    f"-p {self.port} {options}",
                )
            except PgServerError as exc:
                last = exc
                continue
            self.started = True
            return
        raise last or PgServerError("PostgreSQL did not start")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        return self._run(
            self.bin_dir / "psql",
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-c",
            sql,
        ).stdout

    def create_database(self, name: str | None = None, template: str | None = None) -> str:
        """A new database (optionally a copy of `template`); returns its sqlalchemy URL."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        self.psql(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self.started:
            self._run(self.bin_dir / "pg_ctl", "stop", "-D", self.data, "-m", "immediate", "-w", check=False)
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PgServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
