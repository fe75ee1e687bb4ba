"""Child processes of `pynchy dev`: each in its own process group, dying with the supervisor,
with its output in a log file that the terminal stream tails."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

# The control plane's own: SIGKILL when the parent dies (a SIGKILLed supervisor leaves no gateway
# or dev node behind), and a process group of its own (the terminal's Ctrl-C does not reach it: the
# supervisor stops children in order, and signals everything a child started).
from pynchy.kube.processes import _die_with_parent


@dataclass
class Spec:
    """What to run: a `pynchy …` subcommand, its environment, where its output goes."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    port: int | None = None
    ready: Callable[[], bool] | None = None


def pynchy_argv(*args: str) -> list[str]:
    """`pynchy <args>` with this interpreter, so it works whether or not the venv is on PATH."""
    return [sys.executable, "-m", "pynchy", *args]


def process_cmdline(pid: int) -> str | None:
    """The command line of a live process, or None if there is no such process (zombies count as gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def same_process(pid: int | None, cmdline: str | None) -> bool:
    """Whether `pid` is alive and still runs `cmdline` (a recycled pid is another process)."""
    if not pid:
        return False
    current = process_cmdline(pid)
    if current is None:
        return False
    return cmdline is None or current == cmdline


@dataclass
class Child:
    """One supervised process."""

    spec: Spec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    started_wall: str = ""
    restarts: int = 0
    crashes_in_a_row: int = 0
    restart_at: float | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def cmdline(self) -> str:
        return " ".join(self.spec.argv)

    def start(self) -> None:
        self.spec.log.parent.mkdir(parents=True, exist_ok=True)
        self._close_log()
        self._log = self.spec.log.open("ab")
        self.proc = subprocess.Popen(
            self.spec.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.spec.env,
            preexec_fn=_die_with_parent,
        )
        self.started_at = time.monotonic()
        self.started_wall = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.restart_at = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def signal_group(self, sig: int) -> None:
        """Signal the child's whole process group (the child is its leader)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def tail(self, lines: int = 20) -> str:
        return tail(self.spec.log, lines)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def reap(self) -> None:
        """After the leader exited: kill what it left in its group, close the log."""
        self.signal_group(signal.SIGKILL)
        self._close_log()


def stop_children(children: list[Child], grace: float, hurry: Callable[[], bool] = lambda: False) -> None:
    """SIGTERM each child's process group, SIGKILL whatever is left after `grace` seconds (or at once
    when `hurry()` turns true, a second Ctrl-C)."""
    running = [c for c in children if c.alive()]
    for c in running:
        c.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(c.alive() for c in running) and time.monotonic() < deadline and not hurry():
        time.sleep(0.05)
    for c in running:
        if c.alive():
            c.signal_group(signal.SIGKILL)
            if c.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    c.proc.wait(10)
    for c in children:
        c.reap()


def tail(path: Path, lines: int = 20) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(render_line(line) or line for line in text.splitlines()[-lines:])


# -- the terminal stream -----------------------------------------------------------------------

KLOG = re.compile(r"^([IWEF])(\d{4} \d{2}:\d{2}:\d{2})\.\d+\s+\d+\s+\S+\]\s?(.*)$")
KLOG_LEVELS = {"I": "info", "W": "warning", "E": "error", "F": "fatal"}
_SKIP_KEYS = {"timestamp", "level", "event", "logger", "ts", "msg", "caller", "time", "exception"}
# Routine success lines that say nothing a person watching needs (they stay in the log files).
_ROUTINE = re.compile(r"^(Handler|Activity) '[^']+' succeeded\.$")
_ROUTINE_LOGGERS = {"aiohttp.access"}


def _record(line: str) -> dict[str, Any] | None:
    """A JSON log record (structlog, zap), or None for any other line."""
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def render_line(line: str, record: dict[str, Any] | None = None) -> str | None:
    """One log line made readable: structlog/zap JSON → `HH:MM:SS level event k=v`, klog → `HH:MM:SS W msg`.
    None for lines that are neither (shown as they are). `record`: the line already parsed."""
    line = line.rstrip("\r\n")
    record = record if record is not None else _record(line)
    if record is not None:
        stamp = str(record.get("timestamp") or record.get("ts") or record.get("time") or "")
        clock = stamp[11:19] if len(stamp) >= 19 else ""
        level = str(record.get("level", "")).lower()
        event = str(record.get("event") or record.get("msg") or "")
        extras = []
        exception = record.get("exception")
        for key, value in record.items():
            if key in _SKIP_KEYS:
                continue
            text = value if isinstance(value, str) else json.dumps(value)
            if isinstance(value, str) and (" " in text or not text):
                text = json.dumps(value)
            extras.append(f"{key}={text}")
        out = " ".join(part for part in (clock, f"{level:<7}" if level else "", event, *extras) if part)
        if exception:
            out += "\n" + "\n".join("    " + x for x in str(exception).splitlines())
        return out
    match = KLOG.match(line)
    if match:
        level, stamp, message = match.groups()
        return f"{stamp[5:]} {KLOG_LEVELS[level]:<7} {message}"
    return None


def is_routine(line: str, record: dict[str, Any] | None = None) -> bool:
    """A line the terminal skips unless --verbose: debug records, access logs, kopf's per-handler successes.
    `record`: the line already parsed."""
    record = record if record is not None else _record(line)
    if record is None:
        return False
    if str(record.get("level", "")).lower() == "debug" or record.get("logger") in _ROUTINE_LOGGERS:
        return True
    return bool(_ROUTINE.match(str(record.get("event", ""))))


@dataclass
class _Followed:
    prefix: str
    path: Path
    offset: int
    partial: bytes = b""


class LogStream:
    """Follows log files and copies their new lines, readable and prefixed, to the terminal."""

    def __init__(
        self, out: TextIO | None = None, *, verbose: bool = False, width: int = 8, interval: float = 0.2
    ) -> None:
        self.out = out or sys.stdout
        self.verbose = verbose
        self.interval = interval
        self.color = self.out.isatty() and not os.environ.get("NO_COLOR")
        self._files: dict[Path, _Followed] = {}
        self.width = width
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pynchy-dev-logs", daemon=True)

    def follow(self, prefix: str, path: Path) -> None:
        """Copy the lines appended to `path` from now on."""
        try:
            offset = path.stat().st_size
        except OSError:
            offset = 0
        with self._lock:
            if path not in self._files:
                self._files[path] = _Followed(prefix, path, offset)

    def start(self) -> LogStream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._pump()

    def say(self, text: str, prefix: str | None = None) -> None:
        """Lines of the supervisor's own, between the children's lines."""
        with self._lock:
            for line in text.splitlines() or [""]:
                self.out.write((self._prefix(prefix) if prefix else "") + line + "\n")
            self.out.flush()

    def flush(self) -> None:
        """Copy what the files have now (before a message that should come after it)."""
        self._pump()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._pump()

    def _pump(self) -> None:
        with self._lock:
            for f in self._files.values():
                try:
                    with f.path.open("rb") as handle:
                        size = handle.seek(0, os.SEEK_END)
                        if size < f.offset:  # truncated or replaced
                            f.offset = 0
                        handle.seek(f.offset)
                        data = handle.read(1 << 20)
                except OSError:
                    continue
                f.offset += len(data)
                chunks = (f.partial + data).split(b"\n")
                f.partial = chunks.pop()
                for raw in chunks:
                    line = raw.decode(errors="replace").rstrip("\r")
                    if not line.strip():
                        continue
                    record = _record(line)  # parsed once for both
                    if not self.verbose and is_routine(line, record):
                        continue
                    self.out.write(self._prefix(f.prefix) + (render_line(line, record) or line) + "\n")
            self.out.flush()

    def _prefix(self, name: str) -> str:
        text = f"{name:<{self.width}} | "
        if not self.color:
            return text
        colour = 31 + (sum(name.encode()) % 6)
        return f"\033[{colour}m{text}\033[0m"
