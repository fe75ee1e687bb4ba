"""Path mapping: how a process on the host finds what a container would see at its mount paths.

A container sees its volumes at absolute mount paths (``/workspace``, ``/home/agent``). A
process started by the dev node runs on the host, without a mount namespace, so the dev
node gives every pod a *root directory*::

    <data_dir>/pods/<namespace>/<pod>-<uid>/root

and, before each container starts, makes ``root/<mountPath>`` a symlink to the volume's
directory (``root/<mountPath>`` → volume dir, or volume dir + ``subPath``). The file a
container's termination message goes to (``terminationMessagePath``, by default
``/dev/termination-log``) is ``root/<terminationMessagePath>``, a plain file.

Then every string the container is given is rewritten by one rule, :func:`map_path`:

    a value that **equals** a container path P, or **starts with P + "/"**,
    becomes ``root + value``; any other value is left exactly as it is.

The container paths are the container's mount paths and its terminationMessagePath. The
values rewritten are: each environment variable's final value (after ``$(VAR)``
expansion), each element of ``command`` and ``args`` (after expansion), and
``workingDir``. Values are compared as strings, after nothing but normalising the mount
path (``/workspace/`` is ``/workspace``):

* ``/workspace`` and ``/workspace/src/x.py`` are rewritten (mount at ``/workspace``);
* ``/workspaces``, ``--dir=/workspace``, ``/usr/bin:/workspace/bin`` (only a *leading*
  path is seen), ``workspace/x`` (relative) and ``/etc/passwd`` are not.

Because the rewritten value goes through ``root`` and its symlinks, nested mounts
(``/home/agent`` and ``/home/agent/.cache``) resolve like in a container: the inner
symlink is created inside the outer volume while the container runs and removed after.

Example: a pod mounting its workspace claim at ``/workspace`` and its state claim at
``/home/agent``, with ``PYNCHY_WORKSPACE=/workspace`` and ``HOME=/home/agent``, runs with
``PYNCHY_WORKSPACE=<root>/workspace`` and ``HOME=<root>/home/agent``, two symlinks into
``<data_dir>/volumes/<namespace>/<claim>/<claim-uid>``.

Everything in this module is pure (no file system access) and unit-tested.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pynchy.errors import PynchyError


class MountPathError(PynchyError, ValueError):
    """A mount path the dev node cannot represent (relative, or the root itself)."""


def normalize_container_path(path: str) -> str:
    """``/a/b/`` → ``/a/b``; refuses relative paths and ``/`` (a pod root cannot be a symlink)."""
    if not path.startswith("/"):
        raise MountPathError(f"container path {path!r} is not absolute")
    norm = posixpath.normpath(path)
    if norm.startswith("//"):  # POSIX keeps a leading double slash; we do not need it
        norm = "/" + norm.lstrip("/")
    if norm == "/":
        raise MountPathError("mounting a volume at / is not supported by the dev node")
    return norm


def matches(value: str, container_path: str) -> bool:
    """True when ``value`` is ``container_path`` or a path below it (string comparison)."""
    return value == container_path or value.startswith(container_path + "/")


def map_path(value: str, container_paths: Iterable[str], root: str) -> str:
    """The rewrite rule: ``root + value`` if ``value`` is at or below one of ``container_paths``.

    ``container_paths`` must be normalised (see :func:`normalize_container_path`); ``root``
    is the pod root directory on the host.
    """
    for path in container_paths:
        if matches(value, path):
            return root.rstrip("/") + value
    return value


@dataclass(frozen=True)
class PathMap:
    """The rule bound to one container: its root and its container paths."""

    root: str
    container_paths: tuple[str, ...]

    @classmethod
    def for_container(cls, root: str, mount_paths: Iterable[str], termination_message_path: str = "") -> PathMap:
        paths = {normalize_container_path(p) for p in mount_paths}
        if termination_message_path:
            paths.add(normalize_container_path(termination_message_path))
        return cls(root, tuple(sorted(paths)))

    def __call__(self, value: str) -> str:
        return map_path(value, self.container_paths, self.root)

    def env(self, env: Mapping[str, str]) -> dict[str, str]:
        return {k: self(v) for k, v in env.items()}

    def argv(self, argv: Sequence[str]) -> list[str]:
        return [self(a) for a in argv]

    def local(self, container_path: str) -> str:
        """Where an absolute container path lives under the root, mapped or not (root + path)."""
        return self.root.rstrip("/") + normalize_container_path(container_path)


def plan_links(root: str, mounts: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """``(mountPath, target)`` pairs → ``(link path, target)`` pairs, outer mounts first.

    Creating the links in this order makes a nested mount's link land inside (the symlink
    to) the outer volume, which is how the rewritten paths of nested mounts resolve. A
    later mount at the same path replaces an earlier one (as in a container).
    """
    by_path: dict[str, str] = {}
    for mount_path, target in mounts:
        by_path[normalize_container_path(mount_path)] = target
    ordered = sorted(by_path.items(), key=lambda item: (item[0].count("/"), item[0]))
    base = root.rstrip("/")
    return [(base + path, target) for path, target in ordered]
