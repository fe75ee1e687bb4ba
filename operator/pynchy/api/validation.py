"""Validate a decoded manifest against the API models, with field paths people can act on."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from pynchy.api.base import DNS_LABEL, GROUP_VERSION
from pynchy.api.resources import KINDS_BY_NAME


def format_errors(exc: ValidationError) -> list[str]:
    """'spec.trigger.mode: Input should be 'mention' or 'always'' lines, in wire (camelCase) names."""
    lines = []
    for err in exc.errors():
        lines.append(f"{field_path(err['loc'])}: {err['msg']}")
    return lines


def field_path(loc: tuple[int | str, ...]) -> str:
    """('spec', 'channels', 0, 'slack') → 'spec.channels[0].slack', as the API server writes paths."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(object)"


def validate_document(doc: Any) -> list[str]:
    """Problems with one manifest; empty when it is valid. Non-pynchy.dev objects are accepted as is."""
    if not isinstance(doc, dict):
        return ["(document): expected a mapping with apiVersion, kind, metadata and spec"]
    if doc.get("apiVersion") != GROUP_VERSION:
        if str(doc.get("apiVersion", "")).startswith("pynchy.dev/"):
            return [f"apiVersion: {doc.get('apiVersion')!r} is not served; use {GROUP_VERSION}"]
        return []
    kind = KINDS_BY_NAME.get(str(doc.get("kind")))
    if kind is None:
        return [f"kind: {doc.get('kind')!r} is not a pynchy.dev kind; expected one of {', '.join(KINDS_BY_NAME)}"]
    problems = []
    name = str((doc.get("metadata") or {}).get("name", ""))
    if name and (len(name) > kind.max_name_length or not re.fullmatch(DNS_LABEL, name)):
        problems.append(
            f"metadata.name: {name!r} must be at most {kind.max_name_length} characters of lower-case letters, "
            "digits and '-', starting and ending with a letter or digit"
        )
    try:
        kind.model.from_k8s(doc)
    except ValidationError as exc:
        problems += format_errors(exc)
    return problems
