"""Facts the Pynchy deploys decide on. Each answers one question with one read-only command."""

from __future__ import annotations

import shlex

from pyinfra.api import FactBase

# k3s's own binaries; the kubectl and ctr symlinks may be missing or shadowed by other installs.
KUBECTL = "k3s kubectl"
CTR = "k3s ctr --namespace k8s.io"
# The image builders the deploys use, in order of preference.
BUILDERS = ("buildah", "nerdctl", "docker")


class _Flag(FactBase[bool]):
    """A yes/no fact: False when the command prints nothing, else what `process` makes of the
    output (by default: True)."""

    @staticmethod
    def default() -> bool:
        return False

    def process(self, output: list[str]) -> bool:
        return any(line.strip() for line in output)


class K3sVersion(FactBase[str | None]):
    """The installed k3s version ("v1.36.4+k3s1"), or None when k3s is not installed."""

    def command(self) -> str:
        return "k3s --version 2>/dev/null | head -n 1 || true"

    def process(self, output: list[str]) -> str | None:
        # "k3s version v1.36.4+k3s1 (0123abcd)"
        parts = output[0].split()
        return parts[2] if len(parts) >= 3 and parts[0] == "k3s" else None


class Stamp(FactBase[str | None]):
    """The digest a deploy step wrote after it last succeeded (see ops.stamped), or None."""

    def command(self, path: str) -> str:
        return f"cat {shlex.quote(path)} 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        return output[0].strip() or None


class ContainerdImage(_Flag):
    """Whether k3s's containerd (namespace k8s.io, the one the kubelet uses) holds the image `ref`."""

    def command(self, ref: str) -> str:
        return f"{CTR} images list --quiet name=={shlex.quote(ref)} 2>/dev/null || true"


class ImageBuilder(FactBase[str | None]):
    """The first image builder the host has: buildah, nerdctl or docker (None if none)."""

    def command(self) -> str:
        return f"for b in {' '.join(BUILDERS)}; do command -v $b >/dev/null 2>&1 && {{ echo $b; break; }}; done; true"

    def process(self, output: list[str]) -> str | None:
        return output[0].strip() or None


class KubeObject(_Flag):
    """Whether the k3s cluster on the host has the object `kind/object_name` in `namespace`."""

    def command(self, kind: str, object_name: str, namespace: str) -> str:
        return (
            f"{KUBECTL} get --namespace {shlex.quote(namespace)} {shlex.quote(kind)} {shlex.quote(object_name)}"
            " --output name 2>/dev/null || true"
        )


class ApiReady(_Flag):
    """Whether the k3s API server on the host answers /readyz."""

    def command(self) -> str:
        return f"{KUBECTL} get --raw=/readyz 2>/dev/null || true"

    def process(self, output: list[str]) -> bool:
        return output[0].strip() == "ok"


class RolloutsAvailable(_Flag):
    """Whether every named Deployment in `namespace` has all its replicas updated and available."""

    def command(self, namespace: str, names: tuple[str, ...]) -> str:
        template = (
            "{range .items[*]}{.metadata.name}={.status.updatedReplicas}/{.status.availableReplicas}"
            '/{.spec.replicas}{"\\n"}{end}'
        )
        return (
            f"{KUBECTL} get deployments --namespace {shlex.quote(namespace)} "
            f"{' '.join(shlex.quote(n) for n in names)} --output jsonpath={shlex.quote(template)} 2>/dev/null || true"
        )

    def process(self, output: list[str]) -> bool:
        seen = 0
        for line in output:
            name, _, counts = line.strip().partition("=")
            if not name:
                continue
            updated, available, wanted = [*counts.split("/"), "", "", ""][:3]
            if not wanted or updated != wanted or available != wanted:
                return False
            seen += 1
        return seen > 0


class SameContent(_Flag):
    """Whether the output of `command` equals the file at `path` byte for byte (cmp)."""

    def command(self, command: str, path: str) -> str:
        return f"( {command} ) 2>/dev/null | cmp -s - {shlex.quote(path)} && echo same || true"

    def process(self, output: list[str]) -> bool:
        return output[0].strip() == "same"


class PynchyImages(FactBase[list[str]]):
    """Pynchy's images (localhost/pynchy*) in k3s's containerd."""

    @staticmethod
    def default() -> list[str]:
        return []

    def command(self) -> str:
        return f"{CTR} images list --quiet 2>/dev/null | grep '^localhost/pynchy' || true"

    def process(self, output: list[str]) -> list[str]:
        return sorted(line.strip() for line in output if line.strip())
