"""Where `pynchy dev` keeps its state, which ports it uses, and the environment of each child."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pynchy.paths import REPO_ROOT

DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "pynchy" / "dev"
DEFAULT_APISERVER_PORT = 6443
DEFAULT_GATEWAY_PORT = 8420
DEFAULT_NAMESPACE = "default"
NODE_NAME = "pynchy-dev"
SYSTEM_NAMESPACE = "pynchy-system"
MANIFESTS_DIR = REPO_ROOT / "manifests"
DEMO_GROUP = MANIFESTS_DIR / "examples" / "group-local.yaml"
CHAT_CONFIG_MARKER = "# written by `pynchy dev`"

# What a user may have in the environment → what the gateway reads.
MODEL_CREDENTIALS = (
    ("ANTHROPIC_API_KEY", "PYNCHY_ANTHROPIC_API_KEY"),
    ("CLAUDE_CODE_OAUTH_TOKEN", "PYNCHY_ANTHROPIC_AUTH_TOKEN"),
)
# Never handed to anything but the gateway.
SECRET_ENV = {name for pair in MODEL_CREDENTIALS for name in pair}


def default_data_dir() -> Path:
    value = os.environ.get("PYNCHY_DATA_DIR")
    return Path(value).expanduser() if value else DEFAULT_DATA_DIR


@dataclass(frozen=True)
class DevPaths:
    """Everything lives in one directory; a restart with the same directory reuses it all."""

    root: Path

    @classmethod
    def at(cls, data_dir: Path) -> DevPaths:
        return cls(Path(data_dir).expanduser().resolve())

    @property
    def pid_file(self) -> Path:
        return self.root / "dev.pid"

    @property
    def state_file(self) -> Path:
        return self.root / "dev-state.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig, written by the control plane at each start."""
        return self.root / "admin.kubeconfig"

    @property
    def node_dir(self) -> Path:
        return self.root / "node"

    @property
    def database(self) -> Path:
        return self.root / "gateway.db"

    @property
    def chat_config(self) -> Path:
        return self.root / "chat.yaml"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"


def _persistent_secret(path: Path) -> str:
    """A random value generated once and kept (mode 0600) so restarts reuse it."""
    if path.exists():
        value = path.read_text().strip()
        if len(value) >= 32:
            return value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    value = secrets.token_hex(32)
    write_private(path, value + "\n")
    return value


def run_token_key(paths: DevPaths) -> str:
    return _persistent_secret(paths.keys / "run-token-key")


def chat_token(paths: DevPaths) -> str:
    return _persistent_secret(paths.keys / "chat-token")


@dataclass(frozen=True)
class ModelCredential:
    """Which model credential the gateway gets, and what to tell the user about it."""

    env: dict[str, str] = field(default_factory=dict)
    source: str | None = None
    notes: tuple[str, ...] = ()


def model_credential(environ: dict[str, str]) -> ModelCredential:
    """ANTHROPIC_API_KEY or CLAUDE_CODE_OAUTH_TOKEN (or the gateway's own PYNCHY_ variables) → gateway env.

    At most one is passed on: the API key wins when both are set.
    """
    for user_var, gateway_var in (*((g, g) for _, g in MODEL_CREDENTIALS), *MODEL_CREDENTIALS):
        value = environ.get(user_var, "").strip()
        if not value:
            continue
        others = [u for u, _ in MODEL_CREDENTIALS if u != user_var and environ.get(u, "").strip()]
        others += [g for _, g in MODEL_CREDENTIALS if g not in (user_var, gateway_var) and environ.get(g, "").strip()]
        notes = tuple(f"{o} is also set and is ignored (the model proxy uses one credential)" for o in others)
        return ModelCredential({gateway_var: value}, user_var, notes)
    return ModelCredential(
        notes=(
            "No model credential: neither ANTHROPIC_API_KEY nor CLAUDE_CODE_OAUTH_TOKEN is set. "
            "Everything starts, but agents cannot reach Claude and answer with an error until you "
            "restart `pynchy dev` with one of them exported.",
        )
    )


def slack_enabled(environ: dict[str, str]) -> bool:
    return bool(environ.get("PYNCHY_SLACK_BOT_TOKEN")) and bool(
        environ.get("PYNCHY_SLACK_APP_TOKEN") or environ.get("PYNCHY_SLACK_SIGNING_SECRET")
    )


def chat_config_text(gateway_url: str, token: str, namespace: str) -> str:
    body = yaml.safe_dump({"gateway_url": gateway_url, "token": token, "namespace": namespace}, sort_keys=False)
    return f"{CHAT_CONFIG_MARKER}; it is rewritten at each start.\n{body}"


def write_private(path: Path, text: str) -> None:
    """Write a file readable only by its owner, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


def may_overwrite_chat_config(path: Path) -> bool:
    """Ours to rewrite: absent, or written by `pynchy dev` earlier (never a file the user wrote)."""
    try:
        return path.read_text().startswith(CHAT_CONFIG_MARKER)
    except FileNotFoundError:
        return True
    except OSError:
        return False
