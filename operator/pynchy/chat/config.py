"""Where `pynchy chat` finds the gateway and its token.

Each value comes from the first of: the command-line flag, the environment variable, the config
file (`$PYNCHY_CONFIG`, else ~/.config/pynchy/chat.yaml, which `pynchy dev` writes):

    gateway_url   --gateway-url   PYNCHY_CHAT_URL   e.g. http://127.0.0.1:8420
    token         --token         PYNCHY_CHAT_TOKEN    the gateway's PYNCHY_CHAT_TOKEN
    namespace     (file only)                          optional: the namespace the channel's Group must be in
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from pynchy.errors import PynchyError

CONFIG_ENV = "PYNCHY_CONFIG"
URL_ENV = "PYNCHY_CHAT_URL"
TOKEN_ENV = "PYNCHY_CHAT_TOKEN"
URL_PATTERN = re.compile(r"^https?://[^/\s]+(/\S*)?$")


class ChatConfigError(PynchyError):
    """The configuration is missing or wrong; the message says where and what to set."""


@dataclass(frozen=True)
class ChatConfig:
    gateway_url: str  # no trailing slash
    token: str
    namespace: str | None
    path: Path  # the config file consulted (it may not exist)


class ChatFile(BaseModel):
    """The config file's keys. Others are ignored (a newer `pynchy dev` may write more)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    gateway_url: str | None = None
    token: str | None = None
    namespace: str | None = None


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    value = env.get(CONFIG_ENV, "").strip()
    return Path(value).expanduser() if value else Path.home() / ".config" / "pynchy" / "chat.yaml"


def load_file(path: Path) -> ChatFile:
    """The file's values; an absent file has none (flags and variables may supply them)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return ChatFile()
    except OSError as exc:
        raise ChatConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None)
        at = f" (line {where.line + 1}{': ' + problem if problem else ''})" if where is not None else ""
        raise ChatConfigError(f"{path} is not valid YAML{at}; expected keys gateway_url, token, namespace") from None
    if data is None:
        return ChatFile()
    if not isinstance(data, dict):
        raise ChatConfigError(f"{path} must be a mapping with keys gateway_url, token and (optionally) namespace")
    try:
        return ChatFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'].lower()}" for e in exc.errors())
        raise ChatConfigError(f"{path}: {problems}") from None


def _pick(*candidates: tuple[str | None, str]) -> tuple[str, str] | None:
    """The first non-blank value, with where it came from."""
    for value, source in candidates:
        if value is not None and value.strip():
            return value.strip(), source
    return None


def resolve(
    *,
    gateway_url: str | None = None,
    token: str | None = None,
    environ: Mapping[str, str] | None = None,
    path: Path | None = None,
) -> ChatConfig:
    env = os.environ if environ is None else environ
    path = path or config_path(env)
    file = load_file(path)
    url = _pick((gateway_url, "--gateway-url"), (env.get(URL_ENV), URL_ENV), (file.gateway_url, f"{path}: gateway_url"))
    tok = _pick((token, "--token"), (env.get(TOKEN_ENV), TOKEN_ENV), (file.token, f"{path}: token"))
    missing = [key for key, value in (("gateway_url", url), ("token", tok)) if value is None]
    if missing:
        state = "" if path.exists() else " (the file does not exist; `pynchy dev` writes it)"
        flags = " and ".join(
            {"gateway_url": f"--gateway-url/{URL_ENV}", "token": f"--token/{TOKEN_ENV}"}[k] for k in missing
        )
        raise ChatConfigError(
            f"no {' and no '.join(missing)} for the gateway: set {' and '.join(missing)} in {path}{state}, "
            f"or use {flags}"
        )
    assert url is not None
    assert tok is not None
    if not URL_PATTERN.match(url[0]):
        raise ChatConfigError(
            f"{url[1]}: {url[0]!r} is not an http:// or https:// URL (for example http://127.0.0.1:8420)"
        )
    namespace = file.namespace.strip() if file.namespace and file.namespace.strip() else None
    return ChatConfig(gateway_url=url[0].rstrip("/"), token=tok[0], namespace=namespace, path=path)
