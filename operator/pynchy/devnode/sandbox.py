"""A dev-node container in a bubblewrap sandbox: what it sees, who it runs as, the command line.

``bwrap_argv`` is a pure function of a :class:`SandboxSpec` (unit-tested); ``HostImage`` is the
read-only part every sandbox shares (system directories and this Python); ``unavailable_reason``
says in one sentence why bubblewrap cannot run here. See docs/devnode.md, "Isolation".
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pynchy.devnode import sandbox_launcher
from pynchy.devnode.relay import SANDBOX_RELAY_DIR, Address

BWRAP = "bwrap"
DEFAULT_UID = 1000  # the agent image's user; the dev node has no image to read USER from
INSTALL_HINT = "install it (Debian/Ubuntu: sudo apt-get install bubblewrap; Fedora: sudo dnf install bubblewrap)"

# Read-only from the host: programs and libraries, and the few /etc files programs expect.
# /etc is not bound whole: it holds host secrets (shadow, ssh host keys, credentials of services).
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_PATHS = (
    "/etc/alternatives",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/debian_version",
    "/etc/gitconfig",
    "/etc/host.conf",
    "/etc/hosts",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
    "/etc/os-release",
    "/etc/protocols",
    "/etc/services",
    "/etc/ssl",
    "/etc/timezone",
)


@dataclass(frozen=True)
class Sandbox:
    """Run every container in a bubblewrap sandbox: the dev node's default on Linux.

    ``relays`` are the host addresses pods may reach, each at the same address inside the
    sandbox (the gateway); nothing else is reachable.
    """

    relays: tuple[Address, ...] = ()
    bwrap: str = BWRAP


@dataclass(frozen=True)
class Mount:
    """A host file or directory bound at a container path."""

    container_path: str
    host_path: str
    read_only: bool


@dataclass(frozen=True)
class HostImage:
    """What every sandbox sees read-only besides its volumes, each at its host path."""

    binds: tuple[str, ...]
    symlinks: tuple[tuple[str, str], ...]  # (target, path): merged-/usr links such as /bin -> usr/bin
    python: str  # the interpreter that runs the launcher (the dev node's own)

    @classmethod
    def of_host(cls) -> HostImage:
        """System directories, selected /etc files, this Python, its venv and editable sources."""
        symlinks: list[tuple[str, str]] = []
        binds: list[str] = []
        for p in SYSTEM_PATHS:
            path = Path(p)
            if path.is_symlink():
                symlinks.append((os.readlink(path), p))
            elif path.is_dir():
                binds.append(p)
        binds += [p for p in ETC_PATHS if os.path.lexists(p)]
        python_paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, *_editable_sources(Path(sys.prefix))}
        for p in sorted(python_paths):
            for variant in {p, os.path.realpath(p)}:
                if os.path.exists(variant):
                    binds.append(variant)
        binds.append(os.path.dirname(os.path.realpath(sandbox_launcher.__file__)))
        return cls(tuple(_without_covered(binds)), tuple(symlinks), sys.executable)

    def exposes(self, data_dir: Path) -> str | None:
        """Why ``data_dir`` must not be used with this image (every sandbox would see it), or None."""
        resolved = data_dir.resolve()
        for path in self.binds:
            if resolved.is_relative_to(os.path.realpath(path)):
                return (
                    f"the data dir {data_dir} lies inside {path}, which every sandbox sees (read-only): "
                    "each pod would see the others' volumes; choose a data dir outside it"
                )
        return None


def _editable_sources(prefix: Path) -> list[str]:
    """Directories the venv's .pth files add to sys.path (editable installs of this checkout)."""
    found: list[str] = []
    for site in prefix.glob("lib/python*/site-packages"):
        for pth in site.glob("*.pth"):
            try:
                lines = pth.read_text().splitlines()
            except OSError:
                continue
            found += [ln.strip() for ln in lines if ln.strip().startswith("/") and os.path.isdir(ln.strip())]
    return found


def _without_covered(paths: Sequence[str]) -> list[str]:
    """Drop paths inside another path of the list (binding them again changes nothing)."""
    out: list[str] = []
    for p in sorted(set(paths), key=lambda s: (len(PurePosixPath(s).parts), s)):
        if not _under_any(p, out):
            out.append(p)
    return out


@dataclass(frozen=True)
class SandboxRuntime:
    """What a pod worker needs to sandbox its containers, made once when the dev node starts."""

    bwrap: str
    image: HostImage
    relay_dir: str | None
    relay_args: tuple[str, ...]


@dataclass(frozen=True)
class SandboxSpec:
    """One container's sandbox, everything already resolved to host paths."""

    argv: Sequence[str]
    mounts: Sequence[Mount]
    image: HostImage
    passwd_file: str  # host files bound at /etc/passwd and /etc/group
    group_file: str
    uid: int = DEFAULT_UID
    gid: int = DEFAULT_UID
    hostname: str = "pod"
    workdir: str = "/"
    read_only_root: bool = False
    add_capabilities: Sequence[str] = ()
    relay_dir: str | None = None  # host directory of the relay sockets
    relay_args: Sequence[str] = ()
    termination_file: tuple[str, str] | None = None  # (host file, container path) when not in a volume
    memory_limit: int | None = None  # bytes: RLIMIT_DATA of each of the container's processes
    bwrap: str = BWRAP


def _under_any(path: str, parents: Sequence[str]) -> bool:
    return any(path == q or path.startswith(q.rstrip("/") + "/") for q in parents)


def _depth(path: str) -> int:
    return len(PurePosixPath(path).parts)


def bwrap_argv(spec: SandboxSpec) -> list[str]:
    """The bubblewrap command line that runs ``spec.argv`` under the sandbox launcher."""
    argv = [
        spec.bwrap,
        "--unshare-user",
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--uid",
        str(spec.uid),
        "--gid",
        str(spec.gid),
        "--hostname",
        spec.hostname,
        "--cap-drop",
        "ALL",
    ]
    for cap in spec.add_capabilities:
        name = cap.upper()
        argv += ["--cap-add", name if name.startswith("CAP_") else f"CAP_{name}"]
    for target, path in spec.image.symlinks:
        argv += ["--symlink", target, path]
    # An image path under a volume's mount path (a checkout in /tmp, and the pod mounts /tmp) is
    # bound again after the volumes, or the volume would hide it.
    shadowed = [p for p in spec.image.binds if _under_any(p, [m.container_path for m in spec.mounts])]
    for path in spec.image.binds:
        if path not in shadowed:
            argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--ro-bind", spec.passwd_file, "/etc/passwd", "--ro-bind", spec.group_file, "/etc/group"]
    # Outer mounts first, so an inner one lands inside the outer volume, as with the kubelet.
    for m in sorted(spec.mounts, key=lambda m: _depth(m.container_path)):
        argv += ["--ro-bind" if m.read_only else "--bind", m.host_path, m.container_path]
    for path in shadowed:
        argv += ["--ro-bind", path, path]
    if spec.relay_dir is not None:
        argv += ["--ro-bind", spec.relay_dir, SANDBOX_RELAY_DIR]
    if spec.termination_file is not None:
        argv += ["--bind", spec.termination_file[0], spec.termination_file[1]]
    if spec.read_only_root:
        argv += ["--remount-ro", "/"]
    argv += ["--chdir", spec.workdir, "--"]
    launcher = [spec.image.python, "-I", "-S", os.path.realpath(sandbox_launcher.__file__), *spec.relay_args]
    if spec.memory_limit is not None:
        launcher += ["--memory-limit", str(spec.memory_limit)]
    argv += [*launcher, "--"]
    return argv + list(spec.argv)


def passwd_lines(uid: int, gid: int, home: str) -> tuple[str, str]:
    """/etc/passwd and /etc/group of a sandbox: root, the container's user, nobody."""
    users = ["root:x:0:0:root:/root:/bin/sh"]
    groups = ["root:x:0:"]
    if uid != 0:
        users.append(f"agent:x:{uid}:{gid}:agent:{home}:/bin/sh")
    if gid != 0:
        groups.append(f"agent:x:{gid}:")
    users.append("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin")
    groups.append("nogroup:x:65534:")
    return "\n".join(users) + "\n", "\n".join(groups) + "\n"


def unavailable_reason(bwrap: str = BWRAP) -> str | None:
    """None when a bubblewrap sandbox can be made here, else one sentence saying why not and what to do."""
    if platform.system() != "Linux":
        return f"agent sandboxes need Linux (bubblewrap); this is {platform.system()}"
    path = shutil.which(bwrap)
    if path is None:
        return f"bubblewrap ({bwrap}) is not installed: {INSTALL_HINT}"
    probe = [path, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "true"]
    try:
        result = subprocess.run(probe, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap could not be run: {exc}"
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no message"])[-1]
        return (
            f"bubblewrap cannot make a sandbox here ({detail}); user namespaces are probably disabled: "
            "allow them (sysctl -w kernel.unprivileged_userns_clone=1, or on Ubuntu 24.04+ "
            "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0)"
        )
    return None


def bwrap_version(bwrap: str = BWRAP) -> str:
    """``bubblewrap 0.8.0`` (for status output); empty when it cannot be asked."""
    try:
        out = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return ""
    return out.stdout.strip()
