"""Read token usage out of Anthropic Messages API responses (SSE streams and JSON bodies)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pynchy.store.models import UsageRow

FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


@dataclass
class ModelUsage:
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0

    def update(self, usage: dict[str, Any] | None) -> None:
        # message_delta carries cumulative counts, so later values replace earlier ones.
        for name in FIELDS:
            value = (usage or {}).get(name)
            if isinstance(value, int) and value >= 0:
                setattr(self, name, value)

    @property
    def empty(self) -> bool:
        return not any(getattr(self, n) for n in FIELDS)


def usage_from_json(body: bytes) -> ModelUsage:
    result = ModelUsage()
    try:
        data = json.loads(body)
    except ValueError:
        return result
    if isinstance(data, dict):
        result.model = data.get("model") if isinstance(data.get("model"), str) else None
        result.update(data.get("usage") if isinstance(data.get("usage"), dict) else None)
    return result


class SseUsage:
    """Feed raw bytes of an SSE stream as they pass through; `usage` holds what was seen."""

    def __init__(self) -> None:
        self.usage = ModelUsage()
        self._buffer = b""

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            line = line.rstrip(b"\r")
            if line.startswith(b"data:"):
                self._data(line[5:].strip())

    def _data(self, payload: bytes) -> None:
        # Only two event types carry usage; the many content deltas of a long answer are not parsed.
        if b"message_start" not in payload and b"message_delta" not in payload:
            return
        try:
            event = json.loads(payload)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        if event.get("type") == "message_start":
            message = event.get("message") or {}
            if isinstance(message.get("model"), str):
                self.usage.model = message["model"]
            self.usage.update(message.get("usage"))
        elif event.get("type") == "message_delta":
            self.usage.update(event.get("usage"))


def usage_values(namespace: str, group: str, run: str, source: str, usage: object, **extra: Any) -> dict[str, Any]:
    """One usage record's columns: 'proxy' (metered from the model's responses) or 'runner' (as
    reported by the agent); `usage` has the token counts of FIELDS as attributes."""
    counts = {name: getattr(usage, name) for name in FIELDS}
    return {"namespace": namespace, "group": group, "run": run, "source": source, **counts, **extra}


def usage_row(namespace: str, group: str, run: str, source: str, usage: object, **extra: Any) -> UsageRow:
    return UsageRow(**usage_values(namespace, group, run, source, usage, **extra))
