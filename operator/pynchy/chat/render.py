"""How `pynchy chat` shows things: the answer on stdout as it streams, everything else on stderr."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime
from typing import Any, TextIO

from pynchy.chat.protocol import (
    ApprovalAsked,
    ChatMessage,
    QuestionAsked,
    Status,
    StreamHeader,
    TextDelta,
    ToolUse,
    TurnFailed,
    TurnResult,
)

TOOL_ARG_KEYS = ("file_path", "path", "command", "pattern", "url", "query", "name", "key", "text", "prompt")


class Style:
    def __init__(self, stream: TextIO) -> None:
        isatty = getattr(stream, "isatty", None)
        self.on = bool(isatty and isatty()) and not os.environ.get("NO_COLOR")

    def _sgr(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.on else text

    def dim(self, text: str) -> str:
        return self._sgr("2", text)

    def red(self, text: str) -> str:
        return self._sgr("31", text)

    def bold(self, text: str) -> str:
        return self._sgr("1", text)


def tool_summary(event: ToolUse, width: int = 70) -> str:
    """'Write(notes.md)': the tool and its most telling argument, short."""
    args = event.input or {}
    arg = next((args[k] for k in TOOL_ARG_KEYS if isinstance(args.get(k), str) and args[k]), None)
    if arg is None and args:
        arg = json.dumps(args, ensure_ascii=False, separators=(",", ":"))
    arg = " ".join(str(arg or "").split())
    if len(arg) > width:
        arg = arg[: width - 1] + "…"
    name = event.name.removeprefix("mcp__pynchy__")
    return f"{name}({arg})"


class TurnPrinter:
    """Writes one turn's events as they arrive: text deltas to `out`, tool uses dimly to `err`,
    and at the end whatever of the final text the deltas did not already show. An approval request
    goes to `on_approval` (default: its text as a dim note), after the current line is ended."""

    def __init__(
        self,
        out: TextIO,
        err: TextIO,
        on_approval: Callable[[ApprovalAsked], None] | None = None,
        on_question: Callable[[QuestionAsked], None] | None = None,
    ) -> None:
        self.out, self.err = out, err
        self.style = Style(err)
        self.on_approval = on_approval or (lambda event: self.note(event.text))
        self.on_question = on_question or (lambda event: self.note(event.text))
        self.streamed = ""
        self.line_open = False  # out's current line has text
        self.gap = False  # a tool use came between texts: start the next on a new paragraph
        self.final: TurnResult | TurnFailed | None = None

    @property
    def ok(self) -> bool:
        return isinstance(self.final, TurnResult) and not self.final.is_error

    def _write(self, text: str) -> None:
        if not text:
            return
        self.out.write(text)
        self.out.flush()
        self.line_open = not text.endswith("\n")

    def _paragraph(self) -> None:
        """One blank line before what follows."""
        self._write("\n\n" if self.line_open else "\n")

    def _end_line(self) -> None:
        if self.line_open:
            self._write("\n")

    def note(self, text: str) -> None:
        self._end_line()
        self.err.write(self.style.dim(text) + "\n")
        self.err.flush()

    def event(self, event: Any) -> None:
        if isinstance(event, StreamHeader):
            if self.streamed:
                self.note("(the gateway restarted; the answer continues)")
                self.streamed, self.gap = "", False
        elif isinstance(event, Status):
            if event.attempt > 1 and self.streamed:
                self.note(f"(the agent stopped mid-answer and starts again, attempt {event.attempt})")
                self.streamed, self.gap = "", False
        elif isinstance(event, TextDelta):
            if self.gap and self.streamed:
                self._paragraph()
            self.gap = False
            self._write(event.text)
            self.streamed += event.text
        elif isinstance(event, ToolUse):
            self.note(f"⏺ {tool_summary(event)}")
            self.gap = True
        elif isinstance(event, ApprovalAsked):
            self._end_line()
            self.on_approval(event)
            self.gap = True
        elif isinstance(event, QuestionAsked):
            self._end_line()
            self.on_question(event)
            self.gap = True
        elif isinstance(event, TurnResult):
            self.final = event
            self._result(event)
        elif isinstance(event, TurnFailed):
            self.final = event
            self._failed(event.message)

    def _result(self, event: TurnResult) -> None:
        if event.is_error:
            self._failed(event.text or "the agent reported an error")
            return
        text = event.text
        shown = self.streamed.strip()
        if not shown:
            self._write(text)
        elif text.strip() and not shown.endswith(text.strip()):
            # The deltas were the agent's working text; the answer is its last message.
            self._paragraph()
            self._write(text)
        self._end_line()
        if not shown and not text.strip():
            self.note("(no text in the answer; a message sent while a turn runs is answered in that turn's reply)")

    def _failed(self, message: str) -> None:
        self._end_line()
        self.err.write(self.style.red("error: ") + message.strip() + "\n")
        self.err.flush()


def message_block(message: ChatMessage, style: Style) -> tuple[str, str]:
    """(header, body) of a message that arrived in the channel (not an answer being streamed)."""
    when = message.at.astimezone().strftime("%H:%M") if isinstance(message.at, datetime) else "--:--"
    header = style.dim(f"[{when}] {message.kind}")
    body = message.text.rstrip("\n")
    if message.is_error:
        body = style.red("error: ") + body
    return header, body
