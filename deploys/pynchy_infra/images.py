"""The operator/gateway image and the agent image, built on the host (or imported from archives
when air-gapped) into k3s's containerd, where the kubelet finds them without a registry."""

from __future__ import annotations

import shlex
from collections.abc import Generator
from io import BytesIO
from typing import Any

from deploys.pynchy_infra import bundle
from deploys.pynchy_infra.defaults import DEFAULTS, data
from deploys.pynchy_infra.facts import BUILDERS, CTR, ContainerdImage, ImageBuilder
from deploys.pynchy_infra.k3s import local_sha256
from deploys.pynchy_infra.ops import stamped
from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.api.exceptions import DeployError, OperationError
from pyinfra.operations import files


def build_commands(
    builder: str, dockerfile: str, context: str, ref: str, archive: str, build_args: dict[str, str] | None = None
) -> list[str]:
    """Build `ref` from `context` and save it as a docker-archive that containerd can import."""
    f, c, r, a = (shlex.quote(x) for x in (f"{context}/{dockerfile}", context, ref, archive))
    args = "".join(f" --build-arg {shlex.quote(f'{k}={v}')}" for k, v in sorted((build_args or {}).items()))
    if builder == "buildah":
        return [
            f"buildah build --layers -f {f}{args} -t {r} {c}",
            f"rm -f {a} && buildah push {r} docker-archive:{a}:{r}",
        ]
    # nerdctl (with its BuildKit) and docker share the build/save interface.
    return [f"{builder} build -f {f}{args} -t {r} {c}", f"{builder} save -o {a} {r}"]


def build_args() -> dict[str, str]:
    """pynchy_image_build_args, checked: names and values are strings."""
    args = data("pynchy_image_build_args") or {}
    if not isinstance(args, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in args.items()):
        raise DeployError('pynchy_image_build_args: a dict of strings, e.g. {"PYTHON_IMAGE": "mirror/python:3.11"}')
    return dict(args)


@operation()
def image_built(
    ref: str,
    dockerfile: str,
    context_tar: str,
    work_dir: str,
    builder: str = "auto",
    build_args: dict[str, str] | None = None,
) -> Generator[Any, None, None]:
    """`ref` present in k3s's containerd, else built from the uploaded context and imported.

    Tags name their inputs (bundle.image_refs), so a present tag is an up-to-date image.
    """
    if host.get_fact(ContainerdImage, ref=ref):
        host.noop(f"{ref} is in containerd")
        return
    chosen = host.get_fact(ImageBuilder) if builder == "auto" else builder
    if chosen not in BUILDERS:
        raise OperationError(
            "no image builder on the host: install buildah, nerdctl or docker, or let the prerequisites "
            "install buildah (pynchy_image_builder = 'auto')"
        )
    context = f"{work_dir}/context"
    archive = f"{work_dir}/image.tar"
    yield f"rm -rf {shlex.quote(context)} && mkdir -p {shlex.quote(context)}"
    yield f"tar -xf {shlex.quote(context_tar)} -C {shlex.quote(context)}"
    yield from build_commands(chosen, dockerfile, context, ref, archive, build_args)
    yield f"{CTR} images import {shlex.quote(archive)}"
    yield f"rm -rf {shlex.quote(context)} {shlex.quote(archive)}"


@deploy("Pynchy: images", data_defaults=DEFAULTS)
def images() -> dict[str, str]:
    """Returns the image references the manifests should use."""
    state_dir = data("pynchy_state_dir")
    archives = data("pynchy_image_archives")
    files.directory(name="Image work directory", path=f"{state_dir}/images", mode="700")
    if archives:
        refs = bundle.image_refs(built=False)
        for image in ("pynchy", "agent"):
            dest = f"{state_dir}/images/{image}.tar"
            files.put(name=f"Upload the {image} image archive", src=archives[image], dest=dest, mode="600")
            stamped(
                name=f"Import the {image} image archive",
                stamp=f"{state_dir}/stamps/image-{image}",
                digest=local_sha256(archives[image]),
                commands=[f"{CTR} images import {shlex.quote(dest)}"],
                what=f"{image} image",
            )
        return refs

    args = build_args()
    refs = bundle.image_refs(built=True, build_args=args)
    context_tar = f"{state_dir}/images/context.tar"
    files.put(name="Upload the build context", src=BytesIO(bundle.build_context()), dest=context_tar, mode="600")
    for image in ("pynchy", "agent"):
        image_built(
            name=f"Image {refs[image]}",
            ref=refs[image],
            dockerfile=bundle.DOCKERFILES[image],
            context_tar=context_tar,
            work_dir=f"{state_dir}/images/{image}",
            builder=data("pynchy_image_builder"),
            build_args=args,
        )
    return refs
