"""Start a container's command as a local process group, and stop it like a container runtime."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from pynchy.errors import PynchyError

_PR_SET_PDEATHSIG = 1


class StartError(PynchyError):
    """The process could not be started (the kubelet's StartError, exit code 128)."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # The dev node's thread that forks is the "parent" for PDEATHSIG: if it (or the whole dev
    # node process, even SIGKILLed) goes away, the kernel kills this process.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _die_with_parent_ignoring_term() -> None:  # pragma: no cover - runs in the child between fork and exec
    # For bubblewrap: it does not pass signals on, and if it died of the group's SIGTERM its
    # --die-with-parent would SIGKILL the sandbox at once. Ignored here, the sandbox's processes
    # get SIGTERM themselves (same process group) and shut down in their own time.
    _die_with_parent()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def resolve_executable(command: str, search_path: str, cwd: Path) -> str:
    """``command[0]`` as an executable path: a path is taken as is (relative to the working
    directory), a bare name is looked up in ``search_path``."""
    if "/" in command:
        candidate = Path(command) if command.startswith("/") else cwd / command
        if not candidate.is_file():
            raise StartError(f'exec: "{command}": no such file or directory')
        if not os.access(candidate, os.X_OK):
            raise StartError(f'exec: "{command}": permission denied')
        return str(candidate)
    found = shutil.which(command, path=search_path)
    if not found:
        raise StartError(f'exec: "{command}": executable file not found in $PATH (the dev node\'s PATH)')
    return found


async def spawn(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path, *, leader_ignores_term: bool = False
) -> asyncio.subprocess.Process:
    """Start ``argv`` in its own session (process group), output appended to ``log_path``.

    ``leader_ignores_term``: the started program ignores SIGTERM and SIGINT (bubblewrap, whose
    sandbox gets them instead).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        try:
            return await asyncio.create_subprocess_exec(
                *argv,
                cwd=str(cwd),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent_ignoring_term if leader_ignores_term else _die_with_parent,
            )
        except OSError as exc:
            raise StartError(f'exec: "{argv[0]}": {exc.strerror or exc}') from None


def signal_group(pgid: int, sig: int) -> bool:
    """Signal a whole process group; False when it no longer exists."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


async def stop(proc: asyncio.subprocess.Process, grace: float) -> int:
    """SIGTERM the process group, wait up to ``grace`` seconds for the leader, then SIGKILL the group.

    Returns the leader's return code (negative: killed by that signal).
    """
    if proc.returncode is None:
        signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), timeout=max(grace, 0.0))
    signal_group(proc.pid, signal.SIGKILL)  # the leader's leftovers, as when a container's PID 1 exits
    if proc.returncode is None:
        await proc.wait()
    assert proc.returncode is not None
    return proc.returncode
