"""Splitting long replies into channel-sized messages."""

from __future__ import annotations


def split_message(text: str, limit: int) -> list[str]:
    """Cut `text` into parts of at most `limit` characters, preferring paragraph, then line, then
    word boundaries, and keeping fenced code blocks balanced across a cut."""
    if limit < 20:
        raise ValueError("limit must be at least 20 characters")
    if len(text) <= limit:
        return [text]
    closing = "\n```"
    parts: list[str] = []
    rest = text
    reopen = ""  # a fence opened in the previous part, reopened at the top of the next
    while rest:
        if len(reopen) + len(rest) <= limit:
            parts.append(reopen + rest)
            break
        # Room for a closing fence is always kept, so closing one never overflows.
        window = rest[: limit - len(reopen) - len(closing)]
        cut = _best_cut(window)
        chunk = reopen + window[:cut].rstrip()
        rest = rest[cut:].lstrip("\n")
        fence = _open_fence(chunk)
        if fence is not None:
            chunk += closing
            reopen = fence + "\n"
        else:
            reopen = ""
        parts.append(chunk)
    return [p for p in parts if p.strip()]


def _best_cut(window: str) -> int:
    floor = len(window) // 2  # never cut so early that parts become tiny
    for sep in ("\n\n", "\n", " "):
        at = window.rfind(sep, floor)
        if at > 0:
            return at + len(sep)
    return len(window)


def _open_fence(text: str) -> str | None:
    """The opening line of a ``` block left open at the end of `text`, if any."""
    opened: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            opened = None if opened is not None else stripped
    return opened
