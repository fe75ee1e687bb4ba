"""Run Pynchy's pyinfra deploys in-process against pyinfra's @fake connector, and describe what a
host looks like after an installation so a second run can be checked against it.

The @fake connector runs nothing: each command gets the canned answer of the first matching entry
in the host's `fake_responses` (empty output otherwise). `FakeHostState` writes those answers the
way the real commands (stat, sha256sum, dpkg, systemctl, k3s ...) print them.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import IOBase
from pathlib import Path
from typing import Any

from pyinfra.api import Config, Host, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.operations import run_ops
from pyinfra.connectors.fake import FakeConnector

# A fresh Debian host: apt, no k3s, nothing of ours. (Its image builder is whatever the
# prerequisites installed: buildah.)
FRESH = {
    "uname -m": "x86_64",
    "uname -s": "Linux",
    "command -v apt-get": "/usr/bin/apt-get",
    "for b in buildah nerdctl docker": "buildah",
}


@dataclass
class Run:
    """What one deploy run did on one fake host."""

    commands: list[str]
    uploads: dict[str, bytes]
    changed: list[str]  # names of operations that changed something
    failed: list[str]

    def executed(self, pattern: str) -> list[str]:
        return [c for c in self.commands if re.search(pattern, c)]


@contextmanager
def recording_uploads() -> Iterator[dict[str, bytes]]:
    """Capture what the fake connector is asked to upload (it stores nothing itself)."""
    uploads: dict[str, bytes] = {}
    original = FakeConnector.put_file

    def put_file(self: FakeConnector, filename_or_io: Any, remote_filename: str, *args: Any, **kwargs: Any) -> bool:
        if isinstance(filename_or_io, (str, Path)):
            data = Path(filename_or_io).read_bytes()
        else:
            io: IOBase = filename_or_io
            io.seek(0)
            raw = io.read()
            data = raw.encode() if isinstance(raw, str) else raw
        uploads[remote_filename] = data
        return original(self, filename_or_io, remote_filename, *args, **kwargs)

    FakeConnector.put_file = put_file  # type: ignore[method-assign]
    try:
        yield uploads
    finally:
        FakeConnector.put_file = original  # type: ignore[method-assign]


def deploy_on(
    target: str, deploy: Callable[..., Any], host_data: dict[str, Any], *args: Any
) -> tuple[Host, list[str], list[str]]:
    """Prepare (with change detection, as the CLI does without -y) and execute `deploy` on one
    host, `target` ("@fake/node", "@chroot/<root>"). Returns the host and the names of the
    operations that changed something and of those that failed."""
    inventory = Inventory(([(target, host_data)], {}))
    state = State(inventory=inventory, config=Config())
    connect_all(state)
    add_deploy(state, deploy, *args)
    run_ops(state)
    (host,) = list(inventory)
    changed, failed = [], []
    for op_hash in host.op_hash_order:
        meta = state.get_op_meta(op_hash)
        name = sorted(meta.names)[0]
        op_data = state.get_op_data_for_host(host, op_hash)
        result = op_data.operation_meta
        if not result.is_complete() or result.did_error():
            failed.append(name)
        elif result.did_change():
            changed.append(name)
    return host, changed, failed


def run_deploy(deploy: Callable[..., Any], host_data: dict[str, Any], *args: Any) -> Run:
    """`deploy` on one fake host, with the commands it ran and the files it uploaded."""
    data = {"fake_delay": 0, "fake_delay_jitter": 0, **host_data}
    with recording_uploads() as uploads:
        host, changed, failed = deploy_on("@fake/node", deploy, data, *args)
    return Run(list(host.connector.executed_commands), dict(uploads), changed, failed)


# -- the host after an installation -----------------------------------------------------------------


def stat_line(path: str, mode: str, size: int, kind: str = "-") -> str:
    bits = ""
    for digit in mode[-3:]:
        d = int(digit)
        bits += ("r" if d & 4 else "-") + ("w" if d & 2 else "-") + ("x" if d & 1 else "-")
    return f"user=root group=root mode={kind}{bits} atime=0 mtime=0 ctime=0 size={size} '{path}'"


@dataclass
class FakeHostState:
    """Files, directories and command answers of a host, turned into `fake_responses`."""

    files: dict[str, bytes] = field(default_factory=dict)
    file_modes: dict[str, str] = field(default_factory=dict)
    # Files whose content is not known here, only their hash (downloads, generated files).
    sha256: dict[str, str] = field(default_factory=dict)
    sha1: dict[str, str] = field(default_factory=dict)
    dirs: dict[str, str] = field(default_factory=dict)
    answers: dict[str | re.Pattern[str], Any] = field(default_factory=dict)

    def responses(self) -> dict[str | re.Pattern[str], Any]:
        out: dict[str | re.Pattern[str], Any] = {}
        paths = set(self.files) | set(self.sha256) | set(self.sha1)
        for path in sorted(paths):
            q = shlex.quote(path)
            content = self.files.get(path)
            if content is not None:
                out[f"sha256sum {q} "] = f"{hashlib.sha256(content).hexdigest()}  {path}"
                out[f"sha1sum {q} "] = f"{hashlib.sha1(content).hexdigest()}  {path}"
            if path in self.sha256:
                out[f"sha256sum {q} "] = f"{self.sha256[path]}  {path}"
            if path in self.sha1:
                out[f"sha1sum {q} "] = f"{self.sha1[path]}  {path}"
            mode = self.file_modes.get(path, "644")
            out[f"! (test -e {q} || test -L {q} )"] = stat_line(path, mode, len(content or b""))
        for path, mode in sorted(self.dirs.items()):
            q = shlex.quote(path)
            out[f"! (test -e {q} || test -L {q} )"] = stat_line(path, mode, 4096, kind="d")
        out.update(self.answers)
        return out


def copy_checkout(repo: Path, paths: set[str], dest: Path) -> Path:
    """Copy these files and folders of the checkout to `dest` (caches left out): what a deploy reads,
    frozen, so others editing the working tree cannot change the image tags between two runs."""
    for rel in sorted(paths):
        src, target = repo / rel, dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, target)
    return dest
