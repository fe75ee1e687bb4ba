"""Magic commands: short messages the gateway answers itself, never the agent."""

from __future__ import annotations

import re
from enum import StrEnum


class Command(StrEnum):
    RESET = "reset"  # the next message starts a fresh session (memories stay)
    STOP = "stop"  # stop the running turn and drop queued ones
    PENDING = "pending"  # list what is running and queued, and the approval requests
    APPROVE = "approve"  # approve <id>: an approval request
    DENY = "deny"  # deny <id>
    ANSWER = "answer"  # answer <id> <number | words>: a question the agent asked (ask_user)


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


_DECISION = re.compile(r"^[/!]?(approve|deny|reject)\s+\[?([a-z0-9]{4,16})\]?[.!]?$")


_ANSWER = re.compile(r"^[/!]?answer\s+\[?([a-z0-9]{4,16})\]?\s+(.+)$", re.IGNORECASE | re.DOTALL)


def parse_decision(text: str) -> tuple[Command, str] | None:
    """`approve <id>` / `deny <id>` (also `reject <id>`, `/approve [id]`), `answer <id> <n | words>`:
    the command and its argument (the id; for answer, 'id words')."""
    answer = _ANSWER.match(text.strip())
    if answer is not None:
        return Command.ANSWER, f"{answer.group(1).lower()} {answer.group(2).strip()}"
    match = _DECISION.match(" ".join(text.strip().lower().split()))
    if match is None:
        return None
    return (Command.APPROVE if match.group(1) == "approve" else Command.DENY), match.group(2)


HELP = (
    "Commands: `reset` (fresh conversation), `stop` (stop the current run), `pending` (what is queued "
    "and waiting for approval), `approve <id>` / `deny <id>` (an approval request), `answer <id> <n>` (a question)."
)
