"""The project's images, built from its real Dockerfiles with buildah on a machine without a registry,
for the test suite's real Kubernetes node (containerd).

`ensure_images` makes three kinds of image in a private buildah storage under the cache directory
(default ~/.cache/pynchy/images, or $PYNCHY_IMAGE_CACHE):

- `localhost/python:3.11-slim-bookworm`, a debootstrap bookworm root standing in for the official
  python image (Python at /usr/local/bin/python3.11 as there; the host's CA bundle trusted, since this
  machine's egress re-signs TLS), and `localhost/uv:<version>` holding only `/uv` from the uv wheel of
  the version the Dockerfiles pin. Both are passed to the Dockerfiles as PYTHON_IMAGE and UV_IMAGE.
- `localhost/pynchy:<key>` (Dockerfile) and `localhost/pynchy-agent:<key>` (agent-image/Dockerfile),
  built unchanged with `buildah bud --pull=never --isolation chroot --layers`.
- optionally `localhost/pause:<key>` and `localhost/coredns:<key>`: a static binary alone (the node's
  sandbox image, its cluster DNS).

Each is saved as a docker-archive (it carries its name, so `ctr images import` names it `ref`). The key
is a digest of everything the build reads: the files the Dockerfile copies (IMAGE_INPUTS, the same
list the pyinfra deploy tags its images by), the base images' IDs and the build arguments. Unchanged
inputs return the existing archives without running anything.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pynchy.errors import PynchyError
from pynchy.logs import get_logger

log = get_logger(__name__)

# -- what each image is built from (shared with deploys/pynchy_infra/bundle.py) ----------------------

# What each image's Dockerfile copies, and the Dockerfile and its ignore file themselves.
IMAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "pynchy": (
        "Dockerfile",
        ".dockerignore",
        "pyproject.toml",
        "uv.lock",
        "README.md",
        "agent-image/pyproject.toml",
        "agent-image/README.md",
        "agent-image/pynchy_agent",
        "operator/pynchy",
    ),
    "agent": (
        "agent-image/Dockerfile",
        "agent-image/Dockerfile.dockerignore",
        "pyproject.toml",
        "uv.lock",
        "agent-image/pyproject.toml",
        "agent-image/README.md",
        "agent-image/pynchy_agent",
    ),
}
DOCKERFILES = {"pynchy": "Dockerfile", "agent": "agent-image/Dockerfile"}
IMAGE_NAMES = {"pynchy": "localhost/pynchy", "agent": "localhost/pynchy-agent"}
# Never part of an image (both .dockerignore files exclude them).
SKIP_PARTS = frozenset({"__pycache__", ".pytest_cache", ".ruff_cache"})


def collect(paths: Iterable[str], root: Path) -> dict[str, bytes]:
    """Relative path -> content of every regular file under `paths` (files or folders) of `root`,
    without caches and byte code."""
    out: dict[str, bytes] = {}
    for rel in paths:
        start = root / rel
        if not start.exists():
            raise FileNotFoundError(f"{start} is missing from the checkout")
        candidates = [start] if start.is_file() else sorted(p for p in start.rglob("*") if p.is_file())
        for path in candidates:
            parts = path.relative_to(root).parts
            if SKIP_PARTS & set(parts) or path.suffix == ".pyc":
                continue
            out["/".join(parts)] = path.read_bytes()
    return out


def digest(entries: Mapping[str, bytes]) -> str:
    """sha256 over names and contents: the same files give the same digest."""
    h = hashlib.sha256()
    for name in sorted(entries):
        h.update(name.encode() + b"\0" + hashlib.sha256(entries[name]).digest())
    return h.hexdigest()


def input_digest(repo: Path, image: str) -> str:
    """Digest of the files `image`'s Dockerfile reads from the checkout at `repo`."""
    return digest(collect(IMAGE_INPUTS[image], repo))


def uv_version(repo: Path) -> str:
    """The uv version both Dockerfiles pin in their UV_IMAGE argument."""
    found = {}
    for image, dockerfile in DOCKERFILES.items():
        match = re.search(r"^ARG UV_IMAGE=\S+/uv:(\S+)$", (repo / dockerfile).read_text(), re.MULTILINE)
        if not match:
            raise ImageBuildError(f"{dockerfile} has no `ARG UV_IMAGE=.../uv:<version>` line")
        found[image] = match.group(1)
    if len(set(found.values())) != 1:
        raise ImageBuildError(f"the Dockerfiles pin different uv versions: {found}")
    return found["pynchy"]


def _key(**parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


# -- the stand-ins for the public base images ---------------------------------------------------------

PYTHON_REF = "localhost/python:3.11-slim-bookworm"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
STORAGE_DRIVER = os.environ.get("PYNCHY_IMAGE_STORAGE_DRIVER", "overlay")
# What the base image is made from; a change here (or in the host's CA bundle) rebuilds it.
BASE_RECIPE_VERSION = 2  # bump when _ensure_base/_finish_base_root change
DEBOOTSTRAP = (
    "--variant=minbase",
    # uv makes the virtual environments itself, so python3-venv (ensurepip) is not needed.
    "--include=python3.11,python3,ca-certificates",
    "bookworm",
)
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    # uv (inside the Dockerfiles' RUN steps) and Python's ssl read it; the bundle includes the host's CAs.
    "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
}
# Like the official image: Debian's main archive, its updates and security (the agent Dockerfile runs apt).
DEBIAN_SOURCES = """\
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
IMAGE_RECIPE = 1  # bump when the way the images below are made changes
# Archives kept per image (older ones, and their tags in the buildah storage, are removed).
KEEP_ARCHIVES = 3


class ImageBuildError(PynchyError, RuntimeError):
    """An image could not be built or imported; the message says which step and why."""


@dataclass(frozen=True)
class BuiltImage:
    ref: str  # e.g. "localhost/pynchy:0123456789ab"
    archive: Path  # a docker-archive that `ctr images import` names `ref`


def default_cache_dir() -> Path:
    env = os.environ.get("PYNCHY_IMAGE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "pynchy" / "images"


# -- the cache ----------------------------------------------------------------------------------------


class _Cache:
    """<root>/archives/<image>-<key12>.tar, <root>/state/{base,uv}.json (recipe key -> image ID),
    <root>/buildah/<driver>/{root,run-<boot>} (private storage), <root>/context/<image> (staged build
    context), <root>/logs/<image>-<key12>.log, <root>/uv/<version>/uv, <root>/lock."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.archives = root / "archives"
        self.state = root / "state"
        self.logs = root / "logs"
        self.storage = root / "buildah" / STORAGE_DRIVER
        boot = Path("/proc/sys/kernel/random/boot_id")
        # Run state (locks, mount counts) must not outlive a reboot: one run root per boot.
        self.runroot = self.storage / f"run-{boot.read_text().strip()[:8] if boot.exists() else 'x'}"

    def archive(self, image: str, key: str) -> Path:
        return self.archives / f"{image}-{key[:12]}.tar"

    def read_state(self, name: str, recipe: str) -> str | None:
        """The image ID last built from `recipe`, if any."""
        try:
            state = json.loads((self.state / f"{name}.json").read_text())
        except (OSError, ValueError):
            return None
        return state.get("id") if state.get("recipe") == recipe else None

    def write_state(self, name: str, recipe: str, image_id: str) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        tmp = self.state / f".{name}.json.tmp"
        tmp.write_text(json.dumps({"recipe": recipe, "id": image_id}))
        tmp.replace(self.state / f"{name}.json")

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / "lock").open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _base_recipe() -> str:
    ca = hashlib.sha256(HOST_CA_BUNDLE.read_bytes()).hexdigest() if HOST_CA_BUNDLE.is_file() else None
    return _key(
        version=BASE_RECIPE_VERSION,
        debootstrap=DEBOOTSTRAP,
        mirror=DEBIAN_MIRROR,
        env=BASE_ENV,
        sources=DEBIAN_SOURCES,
        host_ca=ca,
    )


def _uv_recipe(version: str) -> str:
    return _key(uv=version, recipe=IMAGE_RECIPE)


def build_args(uv: str) -> dict[str, str]:
    return {"PYTHON_IMAGE": PYTHON_REF, "UV_IMAGE": f"localhost/uv:{uv}"}


def image_key(inputs: str, base_id: str, uv_id: str, args: Mapping[str, str], dockerfile: str) -> str:
    """The cache key of a Dockerfile build: its input files, base images and build arguments."""
    return _key(inputs=inputs, base=base_id, uv=uv_id, args=dict(args), dockerfile=dockerfile, recipe=IMAGE_RECIPE)


# Images of one static binary, from scratch: name -> (path in the image = entrypoint, user), as the
# upstream images (Kubernetes' pause runs as 65535, CoreDNS's as nonroot 65532).
STATIC_IMAGES = {"pause": ("/pause", "65535:65535"), "coredns": ("/coredns", "65532:65532")}


def static_key(image: str, binary: Path) -> str:
    return _key(image=image, binary=hashlib.sha256(binary.read_bytes()).hexdigest(), recipe=IMAGE_RECIPE)


def _planned(
    repo: Path,
    cache: _Cache,
    static: Mapping[str, Path],
    base_id: str | None,
    uv_id: str | None,
    uv: str,
    dockerfile_images: Sequence[str] = ("pynchy", "agent"),
) -> dict[str, BuiltImage] | None:
    """The images these inputs make, or None while a base image's ID is unknown."""
    if base_id is None or uv_id is None:
        return None
    out = {}
    for image in dockerfile_images:
        key = image_key(input_digest(repo, image), base_id, uv_id, build_args(uv), DOCKERFILES[image])
        out[image] = BuiltImage(f"{IMAGE_NAMES[image]}:{key[:12]}", cache.archive(image, key))
    for image, binary in static.items():
        key = static_key(image, binary)
        out[image] = BuiltImage(f"localhost/{image}:{key[:12]}", cache.archive(image, key))
    return out


def ensure_images(
    repo: Path,
    cache_dir: Path | None = None,
    pause_binary: Path | None = None,
    coredns_binary: Path | None = None,
    dockerfile_images: Sequence[str] = ("pynchy", "agent"),
) -> dict[str, BuiltImage]:
    """The "pynchy" and "agent" images of the checkout at `repo` (and "pause", "coredns" from those
    static binaries), as archives in the cache: returned at once when their inputs are unchanged,
    built otherwise. `dockerfile_images` narrows the Dockerfile builds (() for the static images
    and the base images alone)."""
    unknown = set(dockerfile_images) - set(DOCKERFILES)
    if unknown:
        raise ValueError(f"no Dockerfile for {sorted(unknown)}")
    cache = _Cache(cache_dir or default_cache_dir())
    static = {
        name: binary for name, binary in (("pause", pause_binary), ("coredns", coredns_binary)) if binary is not None
    }
    uv = uv_version(repo)
    base_recipe, uv_recipe = _base_recipe(), _uv_recipe(uv)
    planned = _planned(
        repo,
        cache,
        static,
        cache.read_state("base", base_recipe),
        cache.read_state("uv", uv_recipe),
        uv,
        dockerfile_images,
    )
    if planned and all(b.archive.is_file() for b in planned.values()):
        log.debug("images cached", refs=[b.ref for b in planned.values()])
        return planned

    with cache.locked():
        _require_tools()
        bh = _Buildah(cache)
        bh.run("rm", "--all")  # working containers a killed run left behind (the storage is ours alone)
        _cleanup_stale_runroots(cache)
        base_id = _ensure_base(bh, cache, base_recipe)
        uv_id = _ensure_uv(bh, cache, uv_recipe, uv)
        planned = _planned(repo, cache, static, base_id, uv_id, uv, dockerfile_images)
        assert planned is not None
        for image, built in planned.items():
            if built.archive.is_file():
                continue
            started = time.monotonic()
            if image in static:
                _build_static(bh, image, built.ref, static[image])
            else:
                _build_dockerfile(bh, cache, repo, image, built.ref, uv)
            built_at = time.monotonic()
            _save(bh, cache, built)
            log.info(
                "image built",
                image=image,
                ref=built.ref,
                build_s=round(built_at - started, 1),
                save_s=round(time.monotonic() - built_at, 1),
                archive_mb=built.archive.stat().st_size // 2**20,
            )
            _prune(bh, cache, image, keep=built.archive)
        bh.run("rm", "--all")  # bud leaves the working containers of FROM-only stages (buildah 1.28)
        prune_dangling(bh.argv)
        return planned


def export_base_images(repo: Path, storage_root: Path, run_root: Path, cache_dir: Path | None = None) -> dict[str, str]:
    """Copy the stand-in base images (built first if needed) into another buildah/podman storage, so
    a builder using that storage can build the real Dockerfiles here; returns the build arguments
    naming them (PYTHON_IMAGE, UV_IMAGE), the same ones ensure_images builds with."""
    cache = _Cache(cache_dir or default_cache_dir())
    uv = uv_version(repo)
    args = build_args(uv)
    with cache.locked():
        _require_tools()
        bh = _Buildah(cache)
        _cleanup_stale_runroots(cache)
        _ensure_base(bh, cache, _base_recipe())
        _ensure_uv(bh, cache, _uv_recipe(uv), uv)
        dest = f"containers-storage:[{STORAGE_DRIVER}@{storage_root}+{run_root}]"
        for ref in args.values():
            bh.run("push", "--quiet", ref, f"{dest}{ref}")
    return args


# -- buildah ------------------------------------------------------------------------------------------


def _require_tools() -> None:
    missing = [tool for tool in ("buildah", "debootstrap", "chroot") if shutil.which(tool) is None]
    if missing:
        raise ImageBuildError(f"{', '.join(missing)} not found: apt-get install -y buildah debootstrap")
    if os.geteuid() != 0:
        raise ImageBuildError("building the images needs root (debootstrap, buildah's chroot isolation)")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _run(cmd: Sequence[str], log_file: Path | None = None) -> str:
    """Run `cmd`; its stdout, or ImageBuildError with what it said. With `log_file`, all output
    goes there (builds are long) and the error quotes its end."""
    if log_file is None:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise ImageBuildError(f"{shlex.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr.strip()}")
        return proc.stdout
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as f:
        f.write(f"\n$ {shlex.join(cmd)}\n".encode())
        f.flush()
        proc2 = subprocess.run(list(cmd), stdout=f, stderr=subprocess.STDOUT, check=False, stdin=subprocess.DEVNULL)
    if proc2.returncode != 0:
        raise ImageBuildError(
            f"{shlex.join(cmd)} failed (exit {proc2.returncode}); the end of {log_file}:\n{_tail(log_file)}"
        )
    return ""


class _Buildah:
    def __init__(self, cache: _Cache) -> None:
        self.argv = [
            "buildah",
            "--root",
            str(cache.storage / "root"),
            "--runroot",
            str(cache.runroot),
            "--storage-driver",
            STORAGE_DRIVER,
        ]

    def run(self, *args: str, log_file: Path | None = None) -> str:
        return _run([*self.argv, *args], log_file=log_file).strip()

    def image_id(self, ref: str) -> str | None:
        proc = subprocess.run(
            [*self.argv, "inspect", "--type", "image", "--format", "{{.FromImageID}}", ref],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            return None
        return proc.stdout.strip() or None

    def commit(self, container: str, ref: str) -> str:
        self.run("commit", "--quiet", "--rm", container, ref)
        image_id = self.image_id(ref)
        if image_id is None:
            raise ImageBuildError(f"buildah committed {ref} but cannot find it")
        return image_id


def _cleanup_stale_runroots(cache: _Cache) -> None:
    for path in cache.storage.glob("run-*"):
        if path != cache.runroot:
            shutil.rmtree(path, ignore_errors=True)


def _umount_under(path: Path) -> None:
    """Unmount whatever a failed debootstrap left mounted inside `path` (deepest first)."""
    prefix = str(path.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)


def _ensure_base(bh: _Buildah, cache: _Cache, recipe: str) -> str:
    """localhost/python:3.11-slim-bookworm: a debootstrap root where the Dockerfiles find what the
    official python image has (Python at /usr/local/bin, apt, groupadd/useradd)."""
    known = cache.read_state("base", recipe)
    if known is not None and bh.image_id(PYTHON_REF) == known:
        return known
    started = time.monotonic()
    logfile = cache.logs / f"base-{recipe[:12]}.log"
    logfile.unlink(missing_ok=True)
    log.info("building the base image with debootstrap (about a minute)", ref=PYTHON_REF, log=str(logfile))
    container = bh.run("from", "--name", f"pynchy-base-{os.getpid()}", "scratch")
    try:
        root = Path(bh.run("mount", container))
        try:
            _run(
                ["debootstrap", *DEBOOTSTRAP, str(root), DEBIAN_MIRROR],
                log_file=logfile,
            )
            debootstrapped = time.monotonic()
            _finish_base_root(root, logfile)
        finally:
            _umount_under(root)
            bh.run("umount", container)
        config: list[str] = []
        for name, value in BASE_ENV.items():
            config += ["--env", f"{name}={value}"]
        bh.run("config", *config, "--cmd", "python3", "--label", f"pynchy.base.recipe={recipe}", container)
        image_id = bh.commit(container, PYTHON_REF)
    except BaseException:
        subprocess.run([*bh.argv, "rm", container], check=False, capture_output=True)
        raise
    cache.write_state("base", recipe, image_id)
    log.info(
        "base image built",
        ref=PYTHON_REF,
        seconds=round(time.monotonic() - started, 1),
        debootstrap_s=round(debootstrapped - started, 1),
    )
    return image_id


def _finish_base_root(root: Path, logfile: Path) -> None:
    local_bin = root / "usr/local/bin"
    local_bin.mkdir(parents=True, exist_ok=True)
    for name in ("python3.11", "python3", "python"):
        (local_bin / name).unlink(missing_ok=True)
        (local_bin / name).symlink_to("/usr/bin/python3.11")
    # The machine's egress re-signs TLS: trust the host's CAs that Debian's bundle lacks, as local
    # certificates, so a later regeneration of the bundle (an apt install of ca-certificates) keeps them.
    image_bundle = root / "etc/ssl/certs/ca-certificates.crt"
    known = set(_pem_blocks(image_bundle.read_text())) if image_bundle.is_file() else set()
    extra = [b for b in _pem_blocks(HOST_CA_BUNDLE.read_text()) if b not in known] if HOST_CA_BUNDLE.is_file() else []
    for n, block in enumerate(extra):
        (root / f"usr/local/share/ca-certificates/host-{n}.crt").write_text(block + "\n")
    _run(["chroot", str(root), "update-ca-certificates"], log_file=logfile)
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    (root / "etc/apt/sources.list.d/debian.sources").write_text(DEBIAN_SOURCES)
    # Host files debootstrap copied in, and what an image does not ship: apt lists and .debs,
    # device nodes (the runtime mounts /dev).
    for rel in ("etc/resolv.conf", "etc/hostname"):
        (root / rel).unlink(missing_ok=True)
    for rel in ("var/lib/apt/lists", "var/cache/apt/archives", "dev", "tmp", "run"):
        for child in (root / rel).glob("*"):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    for leftover in (root / "var/cache/apt").glob("*.bin"):
        leftover.unlink()


def _pem_blocks(text: str) -> list[str]:
    return re.findall(r"-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----", text)


def _uv_binary(cache: _Cache, version: str) -> Path:
    """The uv binary of `version`: one already installed here, else the one in its PyPI wheel."""
    kept = cache.root / "uv" / version / "uv"
    if kept.is_file():
        return kept
    # `uv run` names its own binary in $UV; PATH may hold a wrapper script (pyenv's shim), so only
    # an ELF binary of the pinned version will do.
    candidates = [os.environ.get("UV")]
    try:
        import uv as uv_package  # the uv PyPI package, when installed in this environment

        candidates.append(uv_package.find_uv_bin())
    except (ImportError, FileNotFoundError):
        pass
    candidates.append(shutil.which("uv"))
    kept.parent.mkdir(parents=True, exist_ok=True)
    for candidate in filter(None, candidates):
        try:
            with open(candidate, "rb") as f:
                if f.read(4) != b"\x7fELF":
                    continue
        except OSError:
            continue
        proc = subprocess.run([candidate, "--version"], capture_output=True, text=True, check=False)
        if proc.returncode == 0 and proc.stdout.split()[1:2] == [version]:
            shutil.copyfile(candidate, kept)
            kept.chmod(0o755)
            log.info("uv binary found", path=candidate, version=version)
            return kept
    pythons = [sys.executable, shutil.which("python3")]
    with_pip = [
        p
        for p in filter(None, pythons)
        if subprocess.run([p, "-m", "pip", "--version"], capture_output=True, check=False).returncode == 0
    ]
    if not with_pip:
        raise ImageBuildError(f"no uv {version} here and no pip to download its wheel: pip install uv=={version}")
    with tempfile.TemporaryDirectory() as tmp:
        _run(
            [with_pip[0], "-m", "pip", "download", f"uv=={version}", "--no-deps", "--only-binary=:all:", "-d", tmp],
        )
        wheel = next(Path(tmp).glob("uv-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            kept.write_bytes(zf.read(f"uv-{version}.data/scripts/uv"))
    kept.chmod(0o755)
    log.info("uv binary taken from its wheel", wheel=wheel.name)
    return kept


def _ensure_uv(bh: _Buildah, cache: _Cache, recipe: str, version: str) -> str:
    """localhost/uv:<version>: the uv binary at /uv, which is all the Dockerfiles take from uv's image."""
    ref = f"localhost/uv:{version}"
    known = cache.read_state("uv", recipe)
    if known is not None and bh.image_id(ref) == known:
        return known
    binary = _uv_binary(cache, version)
    container = bh.run("from", "--name", f"pynchy-uv-{os.getpid()}", "scratch")
    try:
        bh.run("copy", "--chmod", "0755", container, str(binary), "/uv")
        bh.run("config", "--entrypoint", '["/uv"]', container)
        image_id = bh.commit(container, ref)
    except BaseException:
        subprocess.run([*bh.argv, "rm", container], check=False, capture_output=True)
        raise
    cache.write_state("uv", recipe, image_id)
    log.info("uv image built", ref=ref)
    return image_id


def _build_static(bh: _Buildah, image: str, ref: str, binary: Path) -> None:
    """An image of the static `binary` alone (STATIC_IMAGES says where and as whom it runs)."""
    path, user = STATIC_IMAGES[image]
    container = bh.run("from", "--name", f"pynchy-{image}-{os.getpid()}", "scratch")
    try:
        bh.run("copy", "--chmod", "0755", container, str(binary), path)
        bh.run("config", "--entrypoint", json.dumps([path]), "--user", user, container)
        bh.commit(container, ref)
    except BaseException:
        subprocess.run([*bh.argv, "rm", container], check=False, capture_output=True)
        raise


def _stage_context(repo: Path, image: str, context: Path) -> None:
    """Exactly the files the image's Dockerfile reads, with fixed times so buildah's layer cache
    sees unchanged files as unchanged."""
    if context.exists():
        shutil.rmtree(context)
    for rel, content in collect(IMAGE_INPUTS[image], repo).items():
        path = context / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    stamp = 946684800  # 2000-01-01
    for path in sorted(context.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        os.utime(path, (stamp, stamp))


def _build_dockerfile(bh: _Buildah, cache: _Cache, repo: Path, image: str, ref: str, uv: str) -> None:
    context = cache.root / "context" / image
    _stage_context(repo, image, context)
    logfile = cache.logs / f"{image}-{ref.rsplit(':', 1)[1]}.log"
    logfile.unlink(missing_ok=True)
    log.info("building image", image=image, ref=ref, log=str(logfile))
    args: list[str] = []
    for name, value in build_args(uv).items():
        args += ["--build-arg", f"{name}={value}"]
    bh.run(
        "bud",
        "--pull=never",
        "--isolation",
        "chroot",
        "--layers",
        "-f",
        str(context / DOCKERFILES[image]),
        *args,
        "-t",
        ref,
        str(context),
        log_file=logfile,
    )


def _save(bh: _Buildah, cache: _Cache, built: BuiltImage) -> None:
    cache.archives.mkdir(parents=True, exist_ok=True)
    tmp = built.archive.with_name(f".{built.archive.name}.tmp")
    tmp.unlink(missing_ok=True)
    bh.run("push", "--quiet", built.ref, f"docker-archive:{tmp}:{built.ref}")
    tmp.replace(built.archive)


def _prune(bh: _Buildah, cache: _Cache, image: str, keep: Path) -> None:
    """Keep the newest KEEP_ARCHIVES archives of `image`; untag the images of older ones (their
    layers stay in buildah's cache until nothing uses them)."""
    archives = sorted(cache.archives.glob(f"{image}-*.tar"), key=lambda p: p.stat().st_mtime, reverse=True)
    name = IMAGE_NAMES.get(image, f"localhost/{image}")
    for old in [a for a in archives if a != keep][KEEP_ARCHIVES - 1 :]:
        old.unlink(missing_ok=True)
        tag = old.stem.rsplit("-", 1)[1]
        subprocess.run([*bh.argv, "rmi", f"{name}:{tag}"], check=False, capture_output=True)
        log.info("old image archive removed", archive=str(old))


# Untagged images younger than this are never pruned. A builder stage's last image is untagged and
# no kept image's parent, yet the next build's cache needs it (else the stage's last step runs
# again, and a new runtime image follows); age is the one sign of disuse buildah keeps, as in
# `docker builder prune --filter until=24h`.
DANGLING_MIN_AGE_S = 24 * 3600


def prune_dangling(buildah: Sequence[str], env: Mapping[str, str] | None = None, now: float | None = None) -> int:
    """Remove untagged images (earlier builds' builder stages and layer-cache steps) that are both
    older than the oldest Pynchy Dockerfile image still tagged and a day old: what only fills the
    disk (a gigabyte or more per rebuild). `buildah` is the command with its storage options;
    returns how many were asked to go (a parent of a kept image refuses and stays)."""

    def images(dangling: bool) -> list[dict[str, Any]]:
        out = subprocess.run(
            [*buildah, "images", "--json", "--filter", f"dangling={str(dangling).lower()}"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return list(json.loads(out or "[]") or [])

    names = set(IMAGE_NAMES.values())
    built = [
        img["created"] for img in images(False) if any(n.rsplit(":", 1)[0] in names for n in img.get("names") or ())
    ]
    if not built:
        return 0
    cutoff = min(min(built), (time.time() if now is None else now) - DANGLING_MIN_AGE_S)
    old = [img["id"] for img in images(True) if img["created"] < cutoff]
    for image_id in old:
        # A parent of a kept image refuses removal; keeping it is the point.
        subprocess.run([*buildah, "rmi", image_id], env=env, check=False, capture_output=True)
    if old:
        log.info("old untagged images removed", count=len(old))
    return len(old)


# -- containerd ---------------------------------------------------------------------------------------


def _ctr_refs(ctr: str, address: Path, namespace: str) -> set[str]:
    return set(_run([ctr, "--address", str(address), "-n", namespace, "images", "ls", "-q"]).split())


def import_images(images: Iterable[BuiltImage], ctr: str, address: Path, namespace: str = "k8s.io") -> None:
    """Import each image into the containerd at `address` unless it already has `ref`; afterwards
    containerd lists it as exactly `ref`, the name the kubelet asks for."""
    present = _ctr_refs(ctr, address, namespace)
    for built in images:
        if built.ref in present:
            log.debug("image already in containerd", ref=built.ref)
            continue
        started = time.monotonic()
        _run([ctr, "--address", str(address), "-n", namespace, "images", "import", str(built.archive)])
        present = _ctr_refs(ctr, address, namespace)
        if built.ref not in present:
            raise ImageBuildError(f"imported {built.archive} but containerd does not list {built.ref}")
        log.info("image imported", ref=built.ref, seconds=round(time.monotonic() - started, 1))
