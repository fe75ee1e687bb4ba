"""End to end: `pynchy chat` in a terminal-less subprocess, through the gateway's local channel, to a
real agent pod on the dev node running the Claude Code CLI against the scripted model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from doubles.anthropic import tool_use
from e2e.conftest import Stack
from e2e.helpers import ready_group

CHAT_TOKEN = "e2e-chat-token-0123456789abcdef"


@pytest.fixture(autouse=True)
def chat_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the stack starts: the gateway takes its chat token from the environment."""
    monkeypatch.setenv("PYNCHY_CHAT_TOKEN", CHAT_TOKEN)


def chat(stack: Stack, home: Path, *args: str, stdin: str | None = None, timeout: float = 300) -> tuple[int, str, str]:
    """Run `pynchy chat` configured the way `pynchy dev` configures it: a chat.yaml, nothing else."""
    config = home / "chat.yaml"
    config.write_text(
        f"# written by `pynchy dev`\ngateway_url: {stack.gateway.url}\ntoken: {CHAT_TOKEN}\n"
        f"namespace: {stack.namespace}\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYNCHY_CHAT_URL", "PYNCHY_CHAT_TOKEN")}
    env |= {"PYNCHY_CONFIG": str(config), "XDG_STATE_HOME": str(home / "state"), "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pynchy", "chat", *args],
        env=env,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_pynchy_chat_talks_to_the_agent_and_shows_its_notes_once(stack: Stack, tmp_path: Path) -> None:
    ready_group(stack, "demo")
    model = stack.model

    model.on_prompt("hello there", "Hello from the agent.")
    code, out, err = chat(stack, tmp_path, "demo", "-m", "hello there", "--timeout", "240")
    assert code == 0, err
    assert out == "Hello from the agent.\n"

    # The agent sends a note with its send_message tool, then answers.
    model.on_prompt("ping me", tool_use("mcp__pynchy__send_message", text="a note from the agent"))
    model.after_tool("mcp__pynchy__send_message", "I sent you a note.")
    code, out, err = chat(stack, tmp_path, "demo", "-m", "ping me please", "--timeout", "240")
    assert code == 0, err
    assert out == "I sent you a note.\n"
    assert "send_message(a note from the agent)" in err  # the tool use, shown on stderr

    # The next session shows the note (it came while -m only printed the answer), and neither answer again.
    code, out, err = chat(stack, tmp_path, "demo")
    assert code == 0, err
    assert out.count("a note from the agent") == 1
    assert "Hello from the agent." not in out
    assert "I sent you a note." not in out
    code, out, _ = chat(stack, tmp_path, "demo")
    assert "a note from the agent" not in out

    # A conversation over piped input: each line a message, each answer once, then a blank line.
    model.on_prompt("first line", "Answer one.")
    model.on_prompt("second line", "Answer two.")
    code, out, err = chat(stack, tmp_path, "demo", stdin="first line\nsecond line\n")
    assert code == 0, err
    assert out == "Answer one.\n\nAnswer two.\n\n"


def test_a_failed_turn_fails_pynchy_chat_m_with_its_message(stack: Stack, tmp_path: Path) -> None:
    ready_group(stack, "broken")
    stack.model.on_prompt("break please", error=(400, "invalid_request_error", "scripted failure 42"), times=100)
    code, out, err = chat(stack, tmp_path, "broken", "-m", "break please", "--timeout", "240")
    assert code == 1
    assert out == ""
    assert "error:" in err
    assert "scripted failure 42" in err

    code, _, err = chat(stack, tmp_path, "elsewhere", "-m", "hi")
    assert code == 1
    assert "no local channel 'elsewhere' (local channels: broken)" in err
