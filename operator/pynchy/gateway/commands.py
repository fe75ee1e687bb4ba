"""Magic commands: short messages the gateway answers itself, never the agent."""

from __future__ import annotations

from enum import StrEnum


class Command(StrEnum):
    RESET = "reset"  # the next message starts a fresh session (memories stay)
    STOP = "stop"  # stop the running turn and drop queued ones
    PENDING = "pending"  # list what is running and queued


_RESET_VERBS = ("reset", "restart", "clear", "new", "wipe")
_RESET_NOUNS = ("context", "session", "chat", "conversation")
_WORDS: dict[str, Command] = {
    **{f"{v} {n}": Command.RESET for v in _RESET_VERBS for n in _RESET_NOUNS},
    "reset": Command.RESET,
    "stop": Command.STOP,
    "stop run": Command.STOP,
    "cancel": Command.STOP,
    "pending": Command.PENDING,
    "queue": Command.PENDING,
}


def parse_command(text: str) -> Command | None:
    """The command a whole message is, if any: 'reset', 'new session', '/stop', 'pending', …
    Only the entire message counts, so 'please reset the router' is an ordinary prompt."""
    words = text.strip().lower().lstrip("/!").rstrip(".!?")
    return _WORDS.get(" ".join(words.split()))


HELP = "Commands: `reset` (fresh conversation), `stop` (stop the current run), `pending` (what is queued)."
