"""Before anything starts: one `pynchy dev` per data dir, no leftovers of a killed one, free ports.

Each problem is a :class:`DevError` whose message says what is wrong and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pynchy.dev.components import process_cmdline, same_process
from pynchy.dev.config import DevPaths
from pynchy.errors import PynchyError


class DevError(PynchyError):
    """`pynchy dev` cannot go on; str() is the message for the user."""


def read_state(paths: DevPaths) -> dict[str, Any]:
    try:
        data = json.loads(paths.state_file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def supervisor_alive(pid: int | None) -> bool:
    """Whether `pid` is a running `pynchy dev` (and not some process that inherited the number)."""
    if not pid:
        return False
    cmdline = process_cmdline(pid)
    return cmdline is not None and "pynchy" in cmdline and " dev" in cmdline


@dataclass
class PidLock:
    """`dev.pid` holds the supervisor's pid under an exclusive flock for its whole life.

    The kernel drops the lock when the process dies, however it dies, so "file present, lock
    free" means the previous run ended without cleaning up: a stale pid file.
    """

    path: Path
    fd: int
    stale_pid: int | None

    @classmethod
    def acquire(cls, paths: DevPaths) -> PidLock:
        paths.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(paths.pid_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            pid = read_pid(paths.pid_file)
            raise DevError(
                f"pynchy dev is already running with this data dir ({paths.root}, pid {pid or '?'}).\n"
                f"  See it:  pynchy dev status --data-dir {paths.root}\n"
                f"  Stop it: Ctrl-C in its terminal, or `kill {pid or '<pid>'}`\n"
                "  Or run a second one with another --data-dir and other ports."
            ) from None
        previous = read_pid(paths.pid_file)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(paths.pid_file, fd, previous if previous and previous != os.getpid() else None)

    def restore_stale(self) -> None:
        """Put the stale pid back, so the next start finds the same leftovers."""
        if self.stale_pid is not None:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"{self.stale_pid}\n".encode(), 0)
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            os.close(self.fd)


def leftovers(state: dict[str, Any]) -> list[tuple[str, int]]:
    """Processes a previous run recorded that still run the same command line."""
    found = []
    for comp in state.get("components", []):
        pid, cmdline = comp.get("pid"), comp.get("cmdline")
        if pid and cmdline and same_process(int(pid), cmdline):
            found.append((str(comp.get("name")), int(pid)))
    return found


def stale_report(paths: DevPaths, lock: PidLock) -> str | None:
    """After taking the lock: a note about a stale pid file, or DevError if its processes still run."""
    if lock.stale_pid is None:
        return None
    left = leftovers(read_state(paths))
    if left:
        listed = ", ".join(f"{name} (pid {pid})" for name, pid in left)
        pids = " ".join(str(pid) for _, pid in left)
        raise DevError(
            f"stale pid file {paths.pid_file}: the previous pynchy dev (pid {lock.stale_pid}) is gone, "
            f"but processes it started still run: {listed}.\n"
            f"  Stop them with `kill {pids}` (they hold the data dir and its ports), then start again."
        )
    return (
        f"note: removed a stale pid file ({paths.pid_file}, pid {lock.stale_pid}): the previous pynchy dev "
        "ended without cleaning up (killed?). None of its processes is left; starting normally."
    )


# -- ports ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Port:
    number: int
    what: str
    option: str  # the flag that changes it


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT from our last run is fine
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def port_holder(port: int) -> tuple[int, str] | None:
    """(pid, command line) of a process of ours listening on `port`, when /proc tells."""
    targets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not targets:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in targets:
                    return int(entry.name), process_cmdline(int(entry.name)) or "?"
        except OSError:
            continue
    return None


def check_ports(ports: list[Port]) -> None:
    problems = []
    for p in ports:
        if port_free(p.number):
            continue
        holder = port_holder(p.number)
        who = f" by pid {holder[0]} ({holder[1][:100]})" if holder else " by another program"
        problems.append(
            f"port {p.number} on 127.0.0.1 ({p.what}) is already in use{who}.\n"
            f"  Stop that program, or give pynchy dev another port: {p.option} <port>"
        )
    if problems:
        raise DevError("\n".join(problems))


def http_ok(url: str) -> bool:
    """Does `url` answer 200 within two seconds?"""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False
