"""The Group's Claude session id, kept on the state volume so the next pod resumes the conversation.

$PYNCHY_HOME/.pynchy/session.json = {"sessionId": ..., "totalCostUSD": ...}. The CLI reports a
session's cost cumulatively (and restores it on resume), so the last total is kept with the id: a
turn's cost is the difference.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from glob import escape
from pathlib import Path

log = logging.getLogger(__name__)

SESSION_FILE = "session.json"


@dataclass(frozen=True)
class SessionState:
    session_id: str
    total_cost_usd: float = 0.0


class SessionStore:
    """Reads and writes session.json; with persist=False (isolated runs) it never writes."""

    def __init__(self, state_dir: Path, *, persist: bool) -> None:
        self.path = state_dir / SESSION_FILE
        self.persist = persist

    def load(self) -> SessionState | None:
        try:
            raw = json.loads(self.path.read_text())
            session_id = raw.get("sessionId")
            if not isinstance(session_id, str) or not session_id:
                return None
            return SessionState(session_id, float(raw.get("totalCostUSD") or 0.0))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("ignoring unreadable session file", extra={"path": str(self.path), "error": str(exc)})
            return None

    def save(self, state: SessionState) -> None:
        if not self.persist:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"sessionId": state.session_id, "totalCostUSD": state.total_cost_usd}) + "\n")
        os.replace(tmp, self.path)

    def clear(self) -> None:
        if self.persist:
            self.path.unlink(missing_ok=True)


def transcript_exists(home: Path, session_id: str) -> bool:
    """Whether the CLI can resume the session: its transcript is under ~/.claude/projects/<project>/."""
    projects = home / ".claude" / "projects"
    return projects.is_dir() and any(projects.glob(f"*/{escape(session_id)}.jsonl"))
