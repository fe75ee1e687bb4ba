"""Validate a decoded manifest against the API models, with field paths people can act on."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from pynchy.api.base import GROUP_VERSION
from pynchy.api.resources import KINDS_BY_NAME


def format_errors(exc: ValidationError) -> list[str]:
    """'spec.trigger.mode: Input should be 'mention' or 'always'' lines, in wire (camelCase) names."""
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(object)"
        lines.append(f"{path}: {err['msg']}")
    return lines


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
    try:
        kind.model.from_k8s(doc)
    except ValidationError as exc:
        return format_errors(exc)
    return []
