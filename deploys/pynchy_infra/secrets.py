"""Secret values for the cluster, read on this machine from the environment or from files named in
host data. Values only ever travel inside files uploaded root-only; never in commands or output."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

# The gateway's credentials and settings kept in the Secret pynchy-gateway (the Deployment reads
# each key by this name; all optional for Kubernetes, the gateway says what it misses).
GATEWAY_KEYS = (
    "PYNCHY_ANTHROPIC_API_KEY",
    "PYNCHY_ANTHROPIC_AUTH_TOKEN",
    "PYNCHY_SLACK_BOT_TOKEN",
    "PYNCHY_SLACK_APP_TOKEN",
    "PYNCHY_SLACK_SIGNING_SECRET",
    "PYNCHY_CHAT_TOKEN",
    "PYNCHY_OWNER",
)
RUN_TOKEN_KEY = "PYNCHY_RUN_TOKEN_KEY"


class SecretError(ValueError):
    """A secret source is unusable; the message names the variable, never its value."""


def read_values(keys: tuple[str, ...], files: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """The values that are set: a file named in host data wins over the environment variable."""
    values: dict[str, str] = {}
    for key in keys:
        if key in files:
            path = Path(os.path.expanduser(files[key]))
            if not path.is_file():
                raise SecretError(f"pynchy_secret_files[{key!r}]: {path} is not a file")
            value = path.read_text().strip()
        else:
            value = environ.get(key, "").strip()
        if value:
            values[key] = value
    return values


def gateway_values(files: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    values = read_values(GATEWAY_KEYS, files, environ)
    if "PYNCHY_ANTHROPIC_API_KEY" in values and "PYNCHY_ANTHROPIC_AUTH_TOKEN" in values:
        raise SecretError("set PYNCHY_ANTHROPIC_API_KEY or PYNCHY_ANTHROPIC_AUTH_TOKEN, not both")
    if "PYNCHY_SLACK_APP_TOKEN" in values and "PYNCHY_SLACK_BOT_TOKEN" not in values:
        raise SecretError("PYNCHY_SLACK_APP_TOKEN (Socket Mode) needs PYNCHY_SLACK_BOT_TOKEN as well")
    return values


def run_token_value(files: Mapping[str, str], environ: Mapping[str, str]) -> str | None:
    """A run-token key you chose; None lets the deploy generate one on the host (the usual case)."""
    value = read_values((RUN_TOKEN_KEY,), files, environ).get(RUN_TOKEN_KEY)
    if value is not None and len(value) < 32:
        raise SecretError(f"{RUN_TOKEN_KEY} must be at least 32 characters (openssl rand -hex 32)")
    return value


def merge_patch(values: Mapping[str, str]) -> bytes:
    """A JSON merge patch that sets these keys and leaves any others in the Secret alone."""
    return (json.dumps({"stringData": dict(sorted(values.items()))}, indent=2) + "\n").encode()
