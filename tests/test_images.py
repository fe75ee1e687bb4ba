"""pynchy.kube.images without building anything: which files name an image (and which never do),
and the cache's promise that unchanged inputs run no build at all."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pynchy.kube import images
from pynchy.kube.images import IMAGE_INPUTS, BuiltImage, ImageBuildError, ensure_images, image_key, input_digest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"agent-image/pynchy_agent", "operator/pynchy"}


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A small checkout with every input the Dockerfiles copy (the real Dockerfiles, stub sources)."""
    root = tmp_path / "repo"
    for rel in sorted({p for paths in IMAGE_INPUTS.values() for p in paths}):
        path = root / rel
        if rel in FOLDERS:
            (path / "sub").mkdir(parents=True)
            (path / "__init__.py").write_text(f"# {rel}\n")
            (path / "sub" / "mod.py").write_text("X = 1\n")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            if (REPO / rel).is_file() and rel.endswith("Dockerfile"):
                shutil.copyfile(REPO / rel, path)
            else:
                path.write_text(f"{rel}\n")
    return root


def digests(root: Path) -> dict[str, str]:
    return {image: input_digest(root, image) for image in IMAGE_INPUTS}


def test_an_input_file_changes_the_digest_of_exactly_the_images_that_copy_it(checkout: Path) -> None:
    before = digests(checkout)
    assert before == digests(checkout)

    (checkout / "operator/pynchy/sub/mod.py").write_text("X = 2\n")
    after_operator = digests(checkout)
    assert after_operator["pynchy"] != before["pynchy"]
    assert after_operator["agent"] == before["agent"]  # the agent image does not copy the operator

    (checkout / "agent-image/pynchy_agent/new.py").write_text("Y = 1\n")
    after_agent = digests(checkout)
    assert all(after_agent[i] != after_operator[i] for i in IMAGE_INPUTS)

    (checkout / "uv.lock").write_text("changed\n")
    assert all(v != after_agent[i] for i, v in digests(checkout).items())


def test_ignored_and_unrelated_files_leave_the_digests_alone(checkout: Path) -> None:
    before = digests(checkout)
    for rel in (
        "operator/pynchy/__pycache__/__init__.cpython-311.pyc",
        "operator/pynchy/sub/__pycache__/mod.cpython-311.pyc",
        "agent-image/pynchy_agent/stray.pyc",
        "agent-image/pynchy_agent/.pytest_cache/v/cache/lastfailed",
        "operator/pynchy/.ruff_cache/content",
        "tests/test_something.py",
        "docs/notes.md",
        "agent-image/tests/test_runner.py",
        ".venv/lib/python3.11/site-packages/x.py",
    ):
        (checkout / rel).parent.mkdir(parents=True, exist_ok=True)
        (checkout / rel).write_bytes(b"anything")
    assert digests(checkout) == before


def test_the_readme_is_an_input_of_the_pynchy_image_only(checkout: Path) -> None:
    # Dockerfile copies README.md (hatchling reads it); agent-image/Dockerfile does not.
    before = digests(checkout)
    (checkout / "README.md").write_text("new words\n")
    after = digests(checkout)
    assert after["pynchy"] != before["pynchy"]
    assert after["agent"] == before["agent"]


def test_the_real_checkout_has_every_input_and_one_uv_version() -> None:
    for image in IMAGE_INPUTS:
        assert len(input_digest(REPO, image)) == 64
    assert images.uv_version(REPO).count(".") == 2


def test_dockerfiles_pinning_different_uv_versions_are_refused(checkout: Path) -> None:
    dockerfile = checkout / "agent-image/Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("/uv:", "/uv:0.0.1-", 1))
    with pytest.raises(ImageBuildError, match="different uv versions"):
        images.uv_version(checkout)


def test_the_key_names_the_base_images_and_build_arguments() -> None:
    args = images.build_args("0.13.9")
    key = image_key("inputs", "base1", "uv1", args, "Dockerfile")
    assert key == image_key("inputs", "base1", "uv1", dict(args), "Dockerfile")
    assert key != image_key("inputs", "base2", "uv1", args, "Dockerfile")
    assert key != image_key("inputs", "base1", "uv2", args, "Dockerfile")
    assert key != image_key("inputs", "base1", "uv1", {**args, "UV_IMAGE": "localhost/uv:0.0.1"}, "Dockerfile")
    assert key != image_key("other", "base1", "uv1", args, "Dockerfile")


def test_unchanged_inputs_return_the_cached_archives_without_running_anything(
    checkout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir = tmp_path / "cache"
    cache = images._Cache(cache_dir)
    uv = images.uv_version(checkout)
    cache.write_state("base", images._base_recipe(), "base-id")
    cache.write_state("uv", images._uv_recipe(uv), "uv-id")
    pause = tmp_path / "pause"
    pause.write_bytes(b"\x7fELF static pause")
    expected: dict[str, BuiltImage] = {}
    for image, name in images.IMAGE_NAMES.items():
        key = image_key(
            input_digest(checkout, image), "base-id", "uv-id", images.build_args(uv), images.DOCKERFILES[image]
        )
        expected[image] = BuiltImage(f"{name}:{key[:12]}", cache_dir / "archives" / f"{image}-{key[:12]}.tar")
    key = images.static_key("pause", pause)
    expected["pause"] = BuiltImage(f"localhost/pause:{key[:12]}", cache_dir / "archives" / f"pause-{key[:12]}.tar")
    for built in expected.values():
        built.archive.parent.mkdir(parents=True, exist_ok=True)
        built.archive.write_bytes(b"archive")

    class WouldBuildError(Exception):
        pass

    def no_subprocess(*args: object, **kwargs: object) -> None:
        raise WouldBuildError(args)

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    monkeypatch.setattr(images, "_require_tools", lambda: None)
    assert ensure_images(checkout, cache_dir, pause_binary=pause) == expected

    (checkout / "operator/pynchy/sub/mod.py").write_text("X = 3\n")
    with pytest.raises(WouldBuildError):
        ensure_images(checkout, cache_dir, pause_binary=pause)


def test_the_cache_directory_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYNCHY_IMAGE_CACHE", str(tmp_path / "elsewhere"))
    assert images.default_cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("PYNCHY_IMAGE_CACHE")
    assert images.default_cache_dir() == Path.home() / ".cache" / "pynchy" / "images"


@pytest.mark.skipif(shutil.which("buildah") is None, reason="buildah is installed by ./scripts/test")
def test_untagged_images_a_day_old_and_older_than_the_oldest_pynchy_image_are_pruned(tmp_path: Path) -> None:
    """Real buildah, a throwaway vfs storage, empty images from scratch (nothing pulled)."""
    bh = ["buildah", "--root", str(tmp_path / "root"), "--runroot", str(tmp_path / "run"), "--storage-driver", "vfs"]

    def image(*, tag: str | None, label: str) -> str:
        container = subprocess.run([*bh, "from", "scratch"], capture_output=True, text=True, check=True).stdout
        container = container.strip()
        subprocess.run([*bh, "config", "--label", f"step={label}", container], check=True, capture_output=True)
        # --timestamp is the image's created time: an order without waiting between commits.
        order = {"old": 1000, "recent": 1500, "kept": 2000, "new": 3000}[label]
        ref = [tag] if tag else []
        out = subprocess.run(
            [*bh, "commit", "--quiet", "--rm", "--timestamp", str(order), container, *ref],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()[:12]

    def ids() -> set[str]:
        out = subprocess.run([*bh, "images", "--quiet", "--no-trunc"], capture_output=True, text=True, check=True)
        return {line.removeprefix("sha256:")[:12] for line in out.stdout.split()}

    old = image(tag=None, label="old")
    recent = image(tag=None, label="recent")  # older than the kept image, but less than a day old
    kept = image(tag="localhost/pynchy:abc", label="kept")
    new = image(tag=None, label="new")
    assert {old, recent, kept, new} <= ids()

    now = 1500 + images.DANGLING_MIN_AGE_S - 1  # "recent" is a second under a day old
    assert images.prune_dangling(bh, now=now) == 1
    assert ids() == {recent, kept, new}
    assert images.prune_dangling(bh, now=now) == 0
    assert images.prune_dangling(bh, now=now + 2) == 1  # a day on: it goes too
    assert ids() == {kept, new}
