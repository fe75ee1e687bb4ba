"""The scripted Messages API server drives the real Claude Code CLI (bundled with claude-agent-sdk)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from claude_agent_sdk import (
    AssistantMessage,
    ClaudeAgentOptions,
    ClaudeSDKClient,
    ResultMessage,
    TextBlock,
    ToolUseBlock,
    query,
)

from doubles.anthropic import ScriptedModel, Usage, tool_use

API_KEY = "sk-scripted-test-key-0123456789"


@pytest.fixture
def model() -> Any:
    with ScriptedModel() as m:
        yield m


def options(model: ScriptedModel, tmp_path: Path, **kwargs: Any) -> ClaudeAgentOptions:
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir(exist_ok=True)
    work.mkdir(exist_ok=True)
    env = {"ANTHROPIC_BASE_URL": model.base_url, "ANTHROPIC_API_KEY": API_KEY, "IS_SANDBOX": "1", "HOME": str(home)}
    return ClaudeAgentOptions(cwd=str(work), env=env, permission_mode="bypassPermissions", **kwargs)


async def collect(prompt: str, opts: ClaudeAgentOptions) -> list[Any]:
    return [message async for message in query(prompt=prompt, options=opts)]


def test_scripted_write_writes_the_file_and_the_final_text_arrives(model: ScriptedModel, tmp_path: Path) -> None:
    target = tmp_path / "work" / "notes.txt"
    model.on_prompt("write the notes", tool_use("Write", file_path=str(target), content="milk\neggs\n"))
    model.after_tool("Write", "Notes written to notes.txt.")

    messages = asyncio.run(asyncio.wait_for(collect("please write the notes", options(model, tmp_path)), 90))

    assert target.read_text() == "milk\neggs\n"
    tool_uses = [
        b for m in messages if isinstance(m, AssistantMessage) for b in m.content if isinstance(b, ToolUseBlock)
    ]
    assert [t.name for t in tool_uses] == ["Write"]
    texts = [b.text for m in messages if isinstance(m, AssistantMessage) for b in m.content if isinstance(b, TextBlock)]
    assert texts[-1] == "Notes written to notes.txt."
    result = messages[-1]
    assert isinstance(result, ResultMessage)
    assert not result.is_error
    assert result.result == "Notes written to notes.txt."
    assert result.num_turns == 2
    assert model.unused_steps == []
    # The second request carried the Write tool's result, and the model saw it succeed.
    (seen,) = model.main_requests[1].tool_results()
    assert seen.name == "Write"
    assert not seen.is_error


def test_result_usage_is_the_scripted_usage(model: ScriptedModel, tmp_path: Path) -> None:
    usage = Usage(input_tokens=1234, output_tokens=56, cache_read_input_tokens=78, cache_creation_input_tokens=9)
    model.on_prompt("how much", "This much.", usage=usage)

    messages = asyncio.run(asyncio.wait_for(collect("how much does it cost", options(model, tmp_path)), 90))

    result = messages[-1]
    assert isinstance(result, ResultMessage)
    assert result.result == "This much."
    assert {k: result.usage[k] for k in usage.wire()} == usage.wire()
    assert (result.total_cost_usd or 0) > 0


def test_requests_carry_the_api_key_and_side_requests_take_no_steps(model: ScriptedModel, tmp_path: Path) -> None:
    model.on_prompt("hello", "Hello back.")

    messages = asyncio.run(asyncio.wait_for(collect("hello there", options(model, tmp_path)), 90))

    assert isinstance(messages[-1], ResultMessage)
    assert messages[-1].result == "Hello back."
    requests = model.message_requests
    assert requests
    assert all(r.header("x-api-key") == API_KEY for r in requests)
    # Exactly one main request, answered by the one step; any side request (the session title)
    # got a default answer that fits its schema and used no step.
    (main,) = model.main_requests
    assert main.step is not None
    assert "hello there" in main.new_input
    assert "Write" in main.tool_names
    for side in (r for r in requests if r.side):
        assert side.step is None


def test_follow_ups_in_one_client_are_answered_in_order(model: ScriptedModel, tmp_path: Path) -> None:
    model.on_prompt("first question", "First answer.")
    model.on_prompt("second question", "Second answer.")

    async def converse() -> list[str | None]:
        results = []
        async with ClaudeSDKClient(options(model, tmp_path)) as client:
            for prompt in ("first question", "second question"):
                await client.query(prompt)
                async for message in client.receive_response():
                    if isinstance(message, ResultMessage):
                        results.append(message.result)
        return results

    assert asyncio.run(asyncio.wait_for(converse(), 90)) == ["First answer.", "Second answer."]
    second = model.main_requests[-1]
    assert "second question" in second.new_input
    assert "first question" not in second.new_input  # earlier prompts are history, not new input


# -- the protocol, without the CLI -------------------------------------------------------------


def test_streaming_events_follow_the_messages_api(model: ScriptedModel) -> None:
    model.next_reply("Two words.", tool_use("Read", file_path="/x", id="toolu_1"), usage=Usage(10, 4))
    body = {
        "model": "claude-test",
        "max_tokens": 100,
        "stream": True,
        "tools": [{"name": "Read", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "read /x"}],
    }
    response = httpx.post(f"{model.base_url}/v1/messages", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    names = [e["type"] for e in events]
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]
    assert events[0]["message"]["usage"]["input_tokens"] == 10
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta" and e["index"] == 0)
    assert text == "Two words."
    partial = "".join(
        e["delta"]["partial_json"] for e in events if e.get("delta", {}).get("type") == "input_json_delta"
    )
    assert json.loads(partial) == {"file_path": "/x"}
    starts = [e["content_block"] for e in events if e["type"] == "content_block_start"]
    assert starts[1] == {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    assert events[-2]["usage"]["output_tokens"] == 4


def test_non_streaming_count_tokens_and_unknown_paths(model: ScriptedModel) -> None:
    body = {"model": "m", "max_tokens": 5, "tools": [{"name": "T"}], "messages": [{"role": "user", "content": "hi"}]}
    message = httpx.post(f"{model.base_url}/v1/messages", json=body).json()
    assert message["type"] == "message"
    assert message["content"] == [{"type": "text", "text": "ok"}]
    assert message["stop_reason"] == "end_turn"

    counted = httpx.post(f"{model.base_url}/v1/messages/count_tokens", json=body).json()
    assert counted["input_tokens"] > 0

    missing = httpx.get(f"{model.base_url}/v1/models")
    assert missing.status_code == 404
    assert missing.json()["type"] == "error"
    assert missing.json()["error"]["type"] == "not_found_error"
    assert [r.path for r in model.requests] == ["/v1/messages", "/v1/messages/count_tokens", "/v1/models"]


def test_side_requests_get_schema_shaped_defaults_and_leave_steps_alone(model: ScriptedModel) -> None:
    step = model.on_prompt("name this", "A scripted answer.")
    title_request = {
        "model": "m",
        "max_tokens": 50,
        "tools": [],
        "messages": [{"role": "user", "content": "<session>name this</session>"}],
        "output_config": {
            "format": {
                "type": "json_schema",
                "schema": {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]},
            }
        },
    }
    answer = httpx.post(f"{model.base_url}/v1/messages", json=title_request).json()
    assert json.loads(answer["content"][0]["text"]) == {"title": "ok"}
    assert step.used == 0


def test_error_steps_answer_with_anthropic_errors(model: ScriptedModel) -> None:
    model.next_reply(error=(529, "overloaded_error", "Overloaded"))
    body = {"model": "m", "max_tokens": 5, "tools": [{"name": "T"}], "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(f"{model.base_url}/v1/messages", json=body)
    assert response.status_code == 529
    assert response.json() == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
