"""What `pynchy chat` has already shown, per gateway and channel, so each message shows once.

`cursor` is the id of the last ledger message processed; `shown` lists what this client printed
some other way (its own turns' streamed answers as 'turn:<id>', its commands' answers by ledger
key), so the copies in the ledger are skipped. Kept in $XDG_STATE_HOME/pynchy/chat/ (default
~/.local/state/pynchy/chat/); updates merge under a lock, so `pynchy chat -m` and an open session
can run side by side.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

MAX_SHOWN = 500


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME", "").strip()
    root = Path(base).expanduser() if base else Path.home() / ".local" / "state"
    return root / "pynchy" / "chat"


@dataclass
class ChatState:
    cursor: int | None = None  # None: never read this channel from this gateway
    shown: list[str] = field(default_factory=list)

    def seen(self, key: str, turn_id: str | None) -> bool:
        return key in self.shown or (turn_id is not None and f"turn:{turn_id}" in self.shown)


class StateFile:
    def __init__(self, gateway_url: str, channel: str, environ: Mapping[str, str] | None = None) -> None:
        digest = hashlib.sha256(gateway_url.encode()).hexdigest()[:12]
        self.path = state_dir(environ) / f"{channel}-{digest}.json"
        self.gateway_url = gateway_url
        self.channel = channel

    def load(self) -> ChatState:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return ChatState()
        if not isinstance(data, dict):
            return ChatState()
        cursor = data.get("cursor")
        shown = data.get("shown")
        return ChatState(
            cursor if isinstance(cursor, int) and cursor >= 0 else None,
            [s for s in shown if isinstance(s, str)] if isinstance(shown, list) else [],
        )

    def update(self, *, cursor: int | None = None, add: Iterable[str] = (), remove: Iterable[str] = ()) -> ChatState:
        """Merge into what is on disk: the cursor only moves forward; `shown` gains and loses keys."""
        with self._locked():
            state = self.load()
            if cursor is not None:
                state.cursor = cursor if state.cursor is None else max(state.cursor, cursor)
            gone = set(remove)
            state.shown = [s for s in state.shown if s not in gone]
            for key in add:
                if key not in state.shown:
                    state.shown.append(key)
            state.shown = state.shown[-MAX_SHOWN:]
            self._write(state)
            return state

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, state: ChatState) -> None:
        body = {"gateway": self.gateway_url, "channel": self.channel, "cursor": state.cursor, "shown": state.shown}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(body, indent=1) + "\n")
        tmp.replace(self.path)
