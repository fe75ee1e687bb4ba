"""Clone a Workspace's repository into an empty workspace, and give a Group its own worktree.

Credentials never land in .git/config or in a URL:

* https: a credential helper given through the environment (GIT_CONFIG_COUNT/KEY/VALUE), which reads
  PYNCHY_GIT_USERNAME / PYNCHY_GIT_PASSWORD at the moment git asks;
* ssh: the mounted key is copied to a private temporary file (ssh refuses the group-readable mount)
  and named in GIT_SSH_COMMAND; hosts are trusted on first use (known_hosts on the state volume).

The same environment is handed to the agent, so its own `git fetch`/`git push` authenticate the same way.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pynchy_agent.errors import AgentError
from pynchy_agent.settings import RunnerSettings

log = logging.getLogger(__name__)

DEFAULT_USERNAME = "x-access-token"  # GitHub's name for token auth; any name works with a GitHub PAT
WORKTREES = ".worktrees"
IGNORED_ENTRIES = frozenset({"lost+found"})  # what a fresh volume may hold and still count as empty
CLONE_TIMEOUT_SECONDS = 900
STAGING_PREFIX = ".pynchy-clone-"
CREDENTIAL_HELPER = (
    '!f() { test "$1" = get || exit 0; '
    'echo "username=${PYNCHY_GIT_USERNAME:-' + DEFAULT_USERNAME + '}"; echo "password=${PYNCHY_GIT_PASSWORD}"; }; f'
)


class GitError(AgentError):
    """Preparing the workspace failed; the message says what git said (credentials redacted)."""


def git_environment(settings: RunnerSettings, private_dir: Path | None = None) -> dict[str, str]:
    """Variables for git (the clone, and the agent's own git commands)."""
    env = {"GIT_TERMINAL_PROMPT": "0"}
    # The workspace is a volume's root, which the provisioner may own (k3s's local-path makes it
    # root's, mode 0777; fsGroup never applies to hostPath volumes). git >= 2.35.2 refuses to work in a
    # repository whose top folder belongs to another user ("detected dubious ownership"); this is our
    # own volume, mounted only into this Group's pods, so trust exactly it (and nothing else).
    config = [("safe.directory", str(settings.workspace))]
    password = settings.git_password.get_secret_value() if settings.git_password else ""
    if password or settings.git_username:
        env.update(PYNCHY_GIT_USERNAME=settings.git_username or DEFAULT_USERNAME, PYNCHY_GIT_PASSWORD=password)
        # An empty helper resets the list: only ours is asked.
        config += [("credential.helper", ""), ("credential.helper", CREDENTIAL_HELPER)]
    # Command-scope configuration (GIT_CONFIG_COUNT/KEY/VALUE): respected for safe.directory too.
    env["GIT_CONFIG_COUNT"] = str(len(config))
    for i, (key, value) in enumerate(config):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    key_file = settings.git_ssh_key_file
    if key_file.is_file():
        folder = private_dir or Path(tempfile.mkdtemp(prefix="pynchy-git-"))
        folder.mkdir(parents=True, exist_ok=True)
        private = folder / "ssh-key"
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key_file.read_bytes())
        known_hosts = settings.home / ".ssh" / "known_hosts"
        known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        env["GIT_SSH_COMMAND"] = (
            f"ssh -i {private} -o IdentitiesOnly=yes -o BatchMode=yes "
            f"-o StrictHostKeyChecking=accept-new -o UserKnownHostsFile={known_hosts}"
        )
    return env


def redact(text: str, secrets: list[str]) -> str:
    text = re.sub(r"(\w+://)[^/@\s]+@", r"\1***@", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _git(
    args: list[str], env: dict[str, str], secrets: list[str], cwd: Path | None = None, timeout: float = 120
) -> str:
    full_env = {**os.environ, **env}
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} did not finish within {timeout:.0f}s") from None
    except FileNotFoundError:
        raise GitError("git is not installed in the agent image") from None
    if proc.returncode != 0:
        detail = redact((proc.stderr or proc.stdout).strip(), secrets)
        raise GitError(f"git {args[0]} failed (exit {proc.returncode}): {detail}")
    return proc.stdout


def _has_ref(ref: str, repo: Path) -> bool:
    probe = ["git", "rev-parse", "--verify", "--quiet", ref]
    return subprocess.run(probe, cwd=repo, capture_output=True, check=False).returncode == 0


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on the workspace folder itself: Groups sharing a Workspace prepare it in turn."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def is_empty(folder: Path) -> bool:
    return all(entry.name in IGNORED_ENTRIES for entry in folder.iterdir())


def clone(settings: RunnerSettings, env: dict[str, str]) -> None:
    """Clone into a temporary folder inside the workspace, then move it into place (a failed clone
    leaves the workspace empty, and a volume's lost+found does not get in the way)."""
    assert settings.git_url
    workspace = settings.workspace
    secrets = [env.get("PYNCHY_GIT_PASSWORD", "")]
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=workspace))
    try:
        log.info("cloning workspace", extra={"url": redact(settings.git_url, secrets), "branch": settings.git_branch})
        _git(
            ["clone", "--branch", settings.git_branch, "--", settings.git_url, str(staging)],
            env,
            secrets,
            timeout=CLONE_TIMEOUT_SECONDS,
        )
        for entry in staging.iterdir():
            os.replace(entry, workspace / entry.name)
    except GitError as exc:
        raise GitError(
            f"cloning {redact(settings.git_url, secrets)} (branch {settings.git_branch}) into {workspace} failed: "
            + str(exc)
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def group_worktree(settings: RunnerSettings, env: dict[str, str]) -> Path:
    """<workspace>/.worktrees/<group> on branch pynchy/<group>, made from the cloned branch on first use."""
    workspace, group = settings.workspace, settings.group
    path = workspace / WORKTREES / group
    if (path / ".git").exists():
        return path
    secrets = [env.get("PYNCHY_GIT_PASSWORD", "")]
    exclude = workspace / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    existing = exclude.read_text() if exclude.exists() else ""
    if f"/{WORKTREES}/" not in existing.splitlines():
        exclude.write_text(existing + ("" if existing.endswith("\n") or not existing else "\n") + f"/{WORKTREES}/\n")
    _git(["worktree", "prune"], env, secrets, cwd=workspace)
    branch = f"pynchy/{group}"
    if _has_ref(f"refs/heads/{branch}", workspace):
        _git(["worktree", "add", str(path), branch], env, secrets, cwd=workspace)
    else:
        start = f"origin/{settings.git_branch}"
        if not _has_ref(start, workspace):
            start = "HEAD"
        _git(["worktree", "add", "-b", branch, str(path), start], env, secrets, cwd=workspace)
    log.info("group worktree created", extra={"path": str(path), "branch": branch})
    return path


def prepare_workspace(settings: RunnerSettings, env: dict[str, str]) -> Path:
    """The agent's working directory: the workspace, cloned first if it is empty and a repository is set."""
    workspace = settings.workspace
    workspace.mkdir(parents=True, exist_ok=True)
    if not settings.git_url:
        return workspace
    with _locked(workspace):
        for stale in workspace.glob(f"{STAGING_PREFIX}*"):  # left by a pod killed mid-clone
            shutil.rmtree(stale, ignore_errors=True)
        if is_empty(workspace):
            clone(settings, env)
        elif not (workspace / ".git").exists():
            log.warning("workspace is not empty and not a git repository: not cloning", extra={"path": str(workspace)})
            return workspace
        if settings.git_worktree_per_group:
            try:
                return group_worktree(settings, env)
            except GitError as exc:
                raise GitError(f"creating the worktree of group {settings.group} failed: {exc}") from None
    return workspace
