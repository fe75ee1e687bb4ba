"""Units of the agent runner (agent-image/pynchy_agent): no CLI, no gateway."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from claude_agent_sdk import ResultMessage

from doubles.githttp import GitHttpServer
from pynchy_agent import client as client_module
from pynchy_agent.client import (
    GatewayUnavailableError,
    RunApiClient,
    RunApiError,
    RunOverError,
    UnauthorizedError,
)
from pynchy_agent.config import ConfigError, GroupConfig, load_config, mcp_servers, seed_memory
from pynchy_agent.conversation import Conversation, InFlight, user_message
from pynchy_agent.events import EventSink
from pynchy_agent.gitclone import GitError, git_environment, prepare_workspace, redact
from pynchy_agent.options import build_options, builtin_tools
from pynchy_agent.protocol import TOOLS, Event, TextDelta, ToolUse, Turn, TurnResult
from pynchy_agent.runner import idle_timeout
from pynchy_agent.session import SessionState, SessionStore, transcript_exists
from pynchy_agent.settings import RunnerSettings, SettingsError, load_settings
from pynchy_agent.tools import input_schema, pynchy_tools, tool_names

REPO = Path(__file__).resolve().parents[1]
TOKEN = "run-token-0123456789abcdef"


def settings(tmp_path: Path, **overrides: Any) -> RunnerSettings:
    values: dict[str, Any] = {
        "run_api_url": "http://gateway.test",
        "run_token": TOKEN,
        "run_name": "run-1",
        "group": "family",
        "workspace": tmp_path / "workspace",
        "home": tmp_path / "home",
        "config_dir": tmp_path / "config",
        "git_ssh_key_file": tmp_path / "no-such-key",
        "ANTHROPIC_BASE_URL": "http://gateway.test/model",
        "ANTHROPIC_API_KEY": TOKEN,
        **overrides,
    }
    return RunnerSettings(**values)


# -- settings ------------------------------------------------------------------------------------


def test_settings_errors_name_every_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("PYNCHY_", "ANTHROPIC_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PYNCHY_RUN_TOKEN", "short")
    monkeypatch.setenv("PYNCHY_RUN_API_URL", "not a url")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    for expected in (
        "PYNCHY_RUN_API_URL: ",
        "PYNCHY_RUN_TOKEN: ",
        "PYNCHY_RUN_NAME is not set",
        "PYNCHY_GROUP is not set",
        "ANTHROPIC_BASE_URL is not set",
        "ANTHROPIC_API_KEY is not set",
    ):
        assert expected in message
    assert "short" not in message.replace("should have", "")  # values are not echoed


def test_idle_timeout_prefers_the_environment_then_agent_json(tmp_path: Path) -> None:
    config = GroupConfig(load_agent({"group": "g", "idleTimeoutSeconds": 120}), None, None)
    assert idle_timeout(settings(tmp_path, idle_timeout_seconds=45), config) == 45
    assert idle_timeout(settings(tmp_path), config) == 120
    assert idle_timeout(settings(tmp_path), GroupConfig(load_agent({"group": "g"}), None, None)) == 600


# -- config --------------------------------------------------------------------------------------


def load_agent(raw: dict[str, Any]) -> Any:
    from pynchy_agent.config import AgentConfig

    return AgentConfig.model_validate(raw)


def write_config(folder: Path, agent: dict[str, Any], **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "agent.json").write_text(json.dumps(agent))
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize("golden", ["group-slack", "group-admin", "group-local"])
def test_the_runner_reads_the_agent_json_the_operator_writes(golden: str) -> None:
    docs = list(yaml.safe_load_all((REPO / "tests" / "golden" / "cases" / f"{golden}.children.yaml").read_text()))
    (config_map,) = [d for d in docs if d and d.get("kind") == "ConfigMap"]
    agent = load_agent(json.loads(config_map["data"]["agent.json"]))
    raw = json.loads(config_map["data"]["agent.json"])
    assert agent.group == raw["group"]
    assert agent.allowed_tools == raw["allowedTools"]
    assert agent.max_turns == raw.get("maxTurns")
    assert agent.has_memory_seed == ("CLAUDE.md" in config_map["data"])


def test_load_config_reads_directives_and_the_memory_seed(tmp_path: Path) -> None:
    folder = write_config(
        tmp_path / "config",
        {"group": "eng", "model": "claude-sonnet-4-5", "allowedTools": ["Read"], "maxTurns": 5, "newKey": 1},
        **{"directives.md": "\nBe brief.\n\n---\n\nCite files.\n", "CLAUDE.md": "# memory\n"},
    )
    config = load_config(folder)
    assert config.agent.group == "eng"
    assert config.agent.model == "claude-sonnet-4-5"
    assert config.agent.max_turns == 5
    assert config.directives == "Be brief.\n\n---\n\nCite files."
    assert config.memory_seed == folder / "CLAUDE.md"

    bare = load_config(write_config(tmp_path / "bare", {"group": "eng"}))
    assert (bare.directives, bare.memory_seed, bare.agent.model) == (None, None, None)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "agent.json is missing: is the Group's ConfigMap mounted at"),
        ("{", "cannot be read as JSON"),
        ('{"admin": true}', "is invalid: group: Field required"),
        ('{"group": "g", "mcpServers": [{"name": "x", "url": "ftp://x"}]}', "mcpServers.0.url"),
    ],
)
def test_load_config_errors_say_what_is_wrong(tmp_path: Path, content: str | None, expected: str) -> None:
    tmp_path.joinpath("config").mkdir()
    if content is not None:
        (tmp_path / "config" / "agent.json").write_text(content)
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace("?", r"\?")):
        load_config(tmp_path / "config")


def test_the_memory_seed_is_copied_once_and_never_over_the_agents_memory(tmp_path: Path) -> None:
    seed = tmp_path / "CLAUDE.md"
    seed.write_text("seed v1\n")
    home = tmp_path / "home"
    assert seed_memory(seed, home)
    assert (home / ".claude" / "CLAUDE.md").read_text() == "seed v1\n"
    (home / ".claude" / "CLAUDE.md").write_text("what the agent learned\n")
    seed.write_text("seed v2\n")
    assert not seed_memory(seed, home)
    assert (home / ".claude" / "CLAUDE.md").read_text() == "what the agent learned\n"
    assert not seed_memory(None, tmp_path / "other")


def test_mcp_servers_are_reached_through_the_gateway_with_the_run_token(tmp_path: Path) -> None:
    agent = load_agent(
        {
            "group": "g",
            "mcpServers": [
                # headersSecret (older operators wrote it): ignored, the gateway reads the Secret.
                {"name": "github", "transport": "http", "url": "https://mcp.github.test/", "headersSecret": True},
                {"name": "docs", "transport": "sse", "url": "http://docs.test/sse"},
            ],
        }
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert mcp_servers(agent, "http://gateway.test/mcp/", TOKEN) == {
        "github": {"type": "http", "url": "http://gateway.test/mcp/github", "headers": auth},
        "docs": {"type": "sse", "url": "http://gateway.test/mcp/docs", "headers": auth},
    }
    assert settings(tmp_path).mcp_url == "http://gateway.test/mcp"  # unset: the run API's gateway
    assert settings(tmp_path, mcp_proxy_url="http://mcp.test:8080/mcp").mcp_url == "http://mcp.test:8080/mcp"


# -- options -------------------------------------------------------------------------------------


def test_builtin_tools_narrow_the_tool_set_only_when_some_are_named() -> None:
    assert builtin_tools([]) is None
    assert builtin_tools(["mcp__github__search"]) is None
    assert builtin_tools(["Read", "Bash(git:*)", "mcp__github__search", "Read", "Bash(ls:*)"]) == ["Read", "Bash"]


def test_build_options(tmp_path: Path) -> None:
    s = settings(tmp_path)
    agent = load_agent(
        {
            "group": "family",
            "model": "claude-sonnet-4-5",
            "allowedTools": ["Read", "Bash(git:*)"],
            "maxTurns": 7,
            "mcpServers": [{"name": "github", "url": "https://gh.test/mcp"}],
        }
    )
    pynchy = {"type": "sdk", "name": "pynchy", "instance": None}
    options = build_options(
        s,
        GroupConfig(agent, "Be kind.", None),
        cwd=tmp_path / "workspace",
        resume="sess-1",
        pynchy=pynchy,  # type: ignore[arg-type]
        env={"GIT_TERMINAL_PROMPT": "0"},
    )
    assert options.cwd == str(tmp_path / "workspace")
    assert options.system_prompt == {"type": "preset", "preset": "claude_code", "append": "Be kind."}
    assert options.tools == ["Read", "Bash"]
    assert options.allowed_tools == ["Read", "Bash(git:*)", *tool_names()]
    assert options.mcp_servers == {
        "github": {
            "type": "http",
            "url": "http://gateway.test/mcp/github",
            "headers": {"Authorization": f"Bearer {TOKEN}"},
        },
        "pynchy": pynchy,
    }
    assert options.permission_mode == "bypassPermissions"
    assert (options.model, options.max_turns, options.resume) == ("claude-sonnet-4-5", 7, "sess-1")
    assert options.setting_sources == ["user", "project"]
    assert options.include_partial_messages
    assert options.env == {
        "HOME": str(s.home),
        "IS_SANDBOX": "1",
        "GIT_TERMINAL_PROMPT": "0",
        # The CLI's side requests use the Group's model: the gateway refuses any other.
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": "claude-sonnet-4-5",
        "ANTHROPIC_SMALL_FAST_MODEL": "claude-sonnet-4-5",
    }

    plain = build_options(
        s, GroupConfig(load_agent({"group": "family"}), None, None), cwd=tmp_path, resume=None, pynchy=pynchy, env={}
    )  # type: ignore[arg-type]
    assert plain.system_prompt == {"type": "preset", "preset": "claude_code"}
    assert plain.tools is None
    assert plain.model is None


# -- session -------------------------------------------------------------------------------------


def test_session_store(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / ".pynchy", persist=True)
    assert store.load() is None
    store.save(SessionState("s-1", 0.25))
    assert json.loads(store.path.read_text()) == {"sessionId": "s-1", "totalCostUSD": 0.25}
    assert store.load() == SessionState("s-1", 0.25)
    store.clear()
    assert store.load() is None
    store.path.write_text("{broken")
    assert store.load() is None

    isolated = SessionStore(tmp_path / "iso", persist=False)
    isolated.save(SessionState("s-2"))
    isolated.clear()
    assert not isolated.path.exists()


def test_transcript_exists(tmp_path: Path) -> None:
    assert not transcript_exists(tmp_path, "abc")
    project = tmp_path / ".claude" / "projects" / "-workspace"
    project.mkdir(parents=True)
    (project / "abc.jsonl").write_text("{}\n")
    assert transcript_exists(tmp_path, "abc")
    assert not transcript_exists(tmp_path, "*")


# -- tools ---------------------------------------------------------------------------------------


def test_tool_schemas_come_from_the_protocol_models_by_alias() -> None:
    assert tool_names() == [f"mcp__pynchy__{name}" for name in TOOLS]
    schedule = input_schema(TOOLS["schedule_task"][0])
    assert schedule["type"] == "object"
    assert {"name", "prompt", "cron", "interval", "once", "timeZone", "contextMode", "group"} == set(
        schedule["properties"]
    )
    assert schedule["required"] == ["name", "prompt"]
    assert schedule["properties"]["contextMode"]["enum"] == ["isolated", "group"]
    assert "title" not in json.dumps(schedule).replace('"title":', "")  # only a property could be named title
    assert input_schema(TOOLS["reset_context"][0]) == {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }
    for name, (model, _) in TOOLS.items():
        schema = input_schema(model)
        assert schema["type"] == "object", name
        assert schema.get("additionalProperties") is False, name


def mock_api(handler: Any, **kwargs: Any) -> RunApiClient:
    return RunApiClient("http://gateway.test", TOKEN, transport=httpx.MockTransport(handler), **kwargs)


def test_tool_calls_go_to_the_gateway_and_refusals_become_tool_errors() -> None:
    calls: list[tuple[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append((request.url.path, json.loads(request.content)))
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        if request.url.path.endswith("/pause_task"):
            return httpx.Response(404, json={"error": "no task named nightly"})
        return httpx.Response(200, json={"text": "done: " + request.url.path.rsplit("/", 1)[1], "data": {"n": 1}})

    resets: list[bool] = []
    tools = {t.name: t for t in pynchy_tools(mock_api(handler), lambda: resets.append(True))}
    assert set(tools) == set(TOOLS)
    assert tools["send_message"].input_schema == input_schema(TOOLS["send_message"][0])

    async def scenario() -> list[dict[str, Any]]:
        return [
            await tools["send_message"].handler({"text": "hi"}),
            await tools["pause_task"].handler({"name": "nightly"}),
            await tools["reset_context"].handler({}),
        ]

    sent, refused, reset = asyncio.run(scenario())
    assert sent == {"content": [{"type": "text", "text": "done: send_message"}]}
    assert refused == {"content": [{"type": "text", "text": "no task named nightly"}], "is_error": True}
    assert reset == {"content": [{"type": "text", "text": "done: reset_context"}]}
    assert resets == [True]
    assert calls == [
        ("/v1/run/tools/send_message", {"arguments": {"text": "hi"}}),
        ("/v1/run/tools/pause_task", {"arguments": {"name": "nightly"}}),
        ("/v1/run/tools/reset_context", {"arguments": {}}),
    ]


def test_an_unreachable_gateway_is_a_tool_error_not_a_crash() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    tools = {t.name: t for t in pynchy_tools(mock_api(handler, retry_seconds=0), lambda: None)}
    result = asyncio.run(tools["list_tasks"].handler({}))
    assert result["is_error"] is True
    assert "could not run list_tasks" in result["content"][0]["text"]


# -- run API client ------------------------------------------------------------------------------


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "backoff", lambda attempt: 0.01)


def test_backoff_grows_and_is_capped() -> None:
    assert [client_module.backoff(n) for n in range(7)] == [0.5, 1, 2, 4, 8, 10, 10]


def test_client_status_codes() -> None:
    answers = iter(
        [
            httpx.Response(204),
            httpx.Response(200, json={"id": "t1", "prompt": "hi", "resetSession": True}),
            httpx.Response(410, json={"error": "the run is over"}),
            httpx.Response(401, json={"error": "token expired"}),
            httpx.Response(422, json={"error": "bad batch"}),
        ]
    )
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return next(answers)

    api = mock_api(handler)

    async def scenario() -> None:
        assert await api.next_turn(12.7) is None
        assert await api.next_turn(5) == Turn(id="t1", prompt="hi", reset_session=True)
        with pytest.raises(RunOverError):
            await api.next_turn(5)
        with pytest.raises(UnauthorizedError, match="token expired"):
            await api.next_turn(5)
        with pytest.raises(RunApiError) as caught:
            await api.post_events("t1", [TextDelta(text="x")])
        assert (caught.value.status, caught.value.message) == (422, "bad batch")

    asyncio.run(scenario())
    assert seen[0].url.path == "/v1/run/turns/next"
    assert seen[0].url.params["wait"] == "12"


def test_client_retries_a_restarting_gateway(fast_backoff: None) -> None:
    attempts: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        if len(attempts) == 1:
            raise httpx.ConnectError("refused", request=request)
        if len(attempts) == 2:
            return httpx.Response(503, json={"error": "starting"})
        return httpx.Response(200, json={"run": "r", "namespace": "ns", "group": "g", "contextMode": "isolated"})

    info = asyncio.run(mock_api(handler).run_info())
    assert info.context_mode == "isolated"
    assert len(attempts) == 3


def test_client_gives_up_after_the_retry_window_and_never_retries_a_tool_call_it_may_have_sent(
    fast_backoff: None,
) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(GatewayUnavailableError, match="failed for 0s: ConnectError"):
        asyncio.run(mock_api(down, retry_seconds=0.05).run_info())

    tool_attempts: list[int] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        tool_attempts.append(1)
        if request.url.path.startswith("/v1/run/tools/"):
            raise httpx.ReadTimeout("no answer", request=request)
        return httpx.Response(503)

    with pytest.raises(httpx.ReadTimeout):
        asyncio.run(mock_api(flaky).call_tool("send_message", {"text": "once"}))
    assert len(tool_attempts) == 1


def test_events_are_posted_in_batches_of_at_most_1000() -> None:
    sizes: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sizes.append(len(json.loads(request.content)["events"]))
        return httpx.Response(204)

    events = [ToolUse(name=f"t{i}") for i in range(2500)]
    asyncio.run(mock_api(handler).post_events("t1", events))
    assert sizes == [1000, 1000, 500]


# -- events --------------------------------------------------------------------------------------


def test_event_sink_coalesces_text_and_posts_at_most_every_interval() -> None:
    posts: list[tuple[float, list[Event]]] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()

        async def post(events: Sequence[Event]) -> None:
            posts.append((loop.time(), list(events)))

        sink = EventSink(post, interval=0.05)
        sink.text("Hel")
        await asyncio.sleep(0)  # the first event goes out at once
        for piece in ("lo", ", ", "wor", "ld"):
            sink.text(piece)
            await asyncio.sleep(0.001)
        sink.add(ToolUse(name="Read", input={"file_path": "/x"}))
        sink.text("!")
        sink.text("")
        await sink.close(TurnResult(text="Hello, world!"))

    asyncio.run(scenario())
    flat = [e for _, batch in posts for e in batch]
    assert flat == [
        TextDelta(text="Hel"),
        TextDelta(text="lo, world"),
        ToolUse(name="Read", input={"file_path": "/x"}),
        TextDelta(text="!"),
        TurnResult(text="Hello, world!"),
    ]
    assert len(posts) == 2  # close() does not wait out the interval


def test_event_sink_spaces_posts_by_the_interval_and_survives_post_failures() -> None:
    times: list[float] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()

        async def post(events: Sequence[Event]) -> None:
            times.append(loop.time())
            if len(times) == 2:
                raise RuntimeError("gateway hiccup")

        sink = EventSink(post, interval=0.05)
        for _ in range(20):
            sink.text("x")
            await asyncio.sleep(0.01)
        await sink.close(TurnResult(text="x" * 20))

    asyncio.run(scenario())
    gaps = [b - a for a, b in itertools.pairwise(times[:-1])]  # the last post (close) does not wait
    assert all(gap >= 0.045 for gap in gaps), gaps
    assert len(times) >= 3  # posting went on after the failed second post (how many more is timing)


# -- conversation: which turns a result answers ---------------------------------------------------


def result(**kwargs: Any) -> ResultMessage:
    base: dict[str, Any] = {
        "subtype": "success",
        "duration_ms": 10,
        "duration_api_ms": 5,
        "is_error": False,
        "num_turns": 1,
        "session_id": "s",
    }
    return ResultMessage(**{**base, **kwargs})


def test_results_are_matched_by_prompt_uuid_then_fifo(tmp_path: Path) -> None:
    async def scenario() -> None:
        conversation = Conversation(
            make_options=lambda resume: None,  # type: ignore[arg-type,return-value]
            api=mock_api(lambda r: httpx.Response(204)),
            sessions=SessionStore(tmp_path, persist=False),
            home=tmp_path,
            initial=None,
        )
        sink = EventSink(lambda events: asyncio.sleep(0))  # type: ignore[arg-type,return-value]
        a, b, c = (InFlight(Turn(id=n, prompt=n), f"uuid-{n}", sink) for n in "abc")
        conversation.in_flight.extend([a, b, c])
        assert conversation._matched(result(user_message_uuids=["uuid-a", "uuid-b"])) == [a, b]
        assert conversation._matched(result(user_message_uuid="uuid-c")) == [c]
        assert conversation._matched(result()) == [a]  # no uuids: FIFO
        assert conversation._matched(result(user_message_uuids=[])) == [a]
        injected = result(user_message_uuids=["other"], origin={"kind": "task-notification"})
        assert conversation._matched(injected) == []

    asyncio.run(scenario())


def test_user_messages_carry_the_uuid_and_the_sender() -> None:
    message = user_message(Turn(id="t", prompt="hi there", sender="alice"), "u-1")
    assert message == {
        "type": "user",
        "message": {"role": "user", "content": "alice: hi there"},
        "parent_tool_use_id": None,
        "uuid": "u-1",
    }
    assert user_message(Turn(id="t", prompt="hi"), "u")["message"]["content"] == "hi"


# -- git -----------------------------------------------------------------------------------------


def git(*args: str, cwd: Path | None = None) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def bare_repo(tmp_path: Path) -> Path:
    """repos/repo.git with branches main (README.md) and dev (DEV.md)."""
    src = tmp_path / "src"
    src.mkdir()
    git("init", "-q", "-b", "main", cwd=src)
    (src / "README.md").write_text("hello\n")
    git("add", ".", cwd=src)
    git("commit", "-qm", "first", cwd=src)
    git("checkout", "-qb", "dev", cwd=src)
    (src / "DEV.md").write_text("dev\n")
    git("add", ".", cwd=src)
    git("commit", "-qm", "dev", cwd=src)
    bare = tmp_path / "repos" / "repo.git"
    git("clone", "-q", "--bare", str(src), str(bare))
    return bare


def test_no_git_url_means_the_workspace_as_it_is(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert prepare_workspace(s, git_environment(s)) == s.workspace
    assert s.workspace.is_dir()
    assert list(s.workspace.iterdir()) == []


def test_clone_into_an_empty_workspace_then_leave_it_alone(tmp_path: Path, bare_repo: Path) -> None:
    s = settings(tmp_path, git_url=str(bare_repo), git_branch="dev")
    s.workspace.mkdir()
    (s.workspace / "lost+found").mkdir()  # a fresh ext4 volume
    assert prepare_workspace(s, git_environment(s)) == s.workspace
    assert (s.workspace / "DEV.md").read_text() == "dev\n"
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=s.workspace).strip() == "dev"
    assert not list(s.workspace.glob(".pynchy-clone-*"))
    (s.workspace / "work.txt").write_text("the agent's work\n")
    prepare_workspace(s, git_environment(s))  # already cloned: nothing happens
    assert (s.workspace / "work.txt").exists()


def test_a_workspace_with_other_files_is_not_cloned_into(tmp_path: Path, bare_repo: Path) -> None:
    s = settings(tmp_path, git_url=str(bare_repo))
    s.workspace.mkdir()
    (s.workspace / "notes.txt").write_text("mine\n")
    assert prepare_workspace(s, git_environment(s)) == s.workspace
    assert not (s.workspace / ".git").exists()


def test_a_failed_clone_says_why_and_leaves_the_workspace_empty(tmp_path: Path) -> None:
    s = settings(tmp_path, git_url=str(tmp_path / "nowhere.git"), git_branch="main")
    with pytest.raises(GitError) as caught:
        prepare_workspace(s, git_environment(s))
    message = str(caught.value)
    assert message.startswith(f"cloning {tmp_path / 'nowhere.git'} (branch main) into {s.workspace} failed: git clone")
    assert "does not exist" in message
    assert list(s.workspace.iterdir()) == []


def test_each_group_gets_its_own_worktree_and_branch(tmp_path: Path, bare_repo: Path) -> None:
    s = settings(tmp_path, git_url=str(bare_repo), git_worktree_per_group=True)
    path = prepare_workspace(s, git_environment(s))
    assert path == s.workspace / ".worktrees" / "family"
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=path).strip() == "pynchy/family"
    assert (path / "README.md").exists()
    assert git("status", "--porcelain", cwd=s.workspace) == ""  # .worktrees/ is excluded
    other = settings(tmp_path, git_url=str(bare_repo), git_worktree_per_group=True, group="eng")
    assert prepare_workspace(other, git_environment(other)) == s.workspace / ".worktrees" / "eng"
    assert prepare_workspace(s, git_environment(s)) == path  # reused
    branches = git("branch", "--format=%(refname:short)", cwd=s.workspace).split()
    assert {"main", "pynchy/family", "pynchy/eng"} <= set(branches)


def test_https_credentials_come_from_the_environment_never_the_git_config(tmp_path: Path, bare_repo: Path) -> None:
    with GitHttpServer(bare_repo.parent, "alice", "s3cret-pass") as server:
        url = f"{server.base_url}/repo.git"

        anonymous = settings(tmp_path / "anon", git_url=url)
        with pytest.raises(GitError) as caught:
            prepare_workspace(anonymous, git_environment(anonymous))
        assert "could not read Username" in str(caught.value) or "Authentication failed" in str(caught.value)

        wrong = settings(tmp_path / "wrong", git_url=url, git_username="alice", git_password="not-it")
        with pytest.raises(GitError) as caught:
            prepare_workspace(wrong, git_environment(wrong))
        assert "not-it" not in str(caught.value)

        s = settings(tmp_path / "ok", git_url=url, git_username="alice", git_password="s3cret-pass")
        env = git_environment(s)
        assert prepare_workspace(s, env) == s.workspace
        assert (s.workspace / "README.md").read_text() == "hello\n"
        config = (s.workspace / ".git" / "config").read_text()
        assert "s3cret-pass" not in config
        assert "alice" not in config
        assert "credential" not in config
        assert all("s3cret-pass" not in v for k, v in env.items() if k != "PYNCHY_GIT_PASSWORD")
        # The agent's own git commands authenticate the same way (the environment is passed on).
        out = subprocess.run(
            ["git", "ls-remote", "origin"], cwd=s.workspace, env={**os.environ, **env}, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        assert "refs/heads/dev" in out.stdout


def test_the_ssh_key_is_copied_private_and_named_in_git_ssh_command(tmp_path: Path) -> None:
    key = tmp_path / "git" / "ssh-privatekey"
    key.parent.mkdir()
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n")
    key.chmod(0o440)  # what kubelet makes of mode 0400 with fsGroup
    s = settings(tmp_path, git_ssh_key_file=key)
    env = git_environment(s, tmp_path / "private")
    private = tmp_path / "private" / "ssh-key"
    assert private.read_text() == key.read_text()
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    command = env["GIT_SSH_COMMAND"]
    assert f"-i {private}" in command
    assert "StrictHostKeyChecking=accept-new" in command
    assert f"UserKnownHostsFile={s.home}/.ssh/known_hosts" in command
    assert "credential.helper" not in env.values()  # no https credentials were given
    assert "GIT_SSH_COMMAND" not in git_environment(settings(tmp_path))


def test_a_workspace_owned_by_another_user_is_still_a_repository_git_works_in(tmp_path: Path, bare_repo: Path) -> None:
    """A volume's root belongs to its provisioner (local-path: root, mode 0777), not to the agent: git
    refuses such a repository ("dubious ownership") unless the workspace is trusted, as the runner does."""
    s = settings(tmp_path, git_url=str(bare_repo), git_branch="main", git_worktree_per_group=True)
    s.workspace.mkdir(parents=True)
    os.chmod(s.workspace, 0o777)
    other = 1000 if os.geteuid() == 0 else None
    if other is not None:
        os.chown(s.workspace, other, other)  # as root, "another user" is any uid but 0
    env = git_environment(s)
    keys = {env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"] for i in range(int(env["GIT_CONFIG_COUNT"]))}
    assert keys["safe.directory"] == str(s.workspace)
    path = prepare_workspace(s, env)
    assert path == s.workspace / ".worktrees" / s.group
    if other is not None:
        # Without the setting, the same repository is refused: the failure the real node showed.
        plain = subprocess.run(["git", "worktree", "list"], cwd=s.workspace, capture_output=True, text=True)
        assert plain.returncode == 128, plain.stderr
        assert "dubious ownership" in plain.stderr


def test_redact_hides_credentials_in_urls_and_secrets() -> None:
    text = "fatal: unable to access 'https://bob:hunter2@git.test/r.git/': token hunter2"
    assert redact(text, ["hunter2"]) == "fatal: unable to access 'https://***@git.test/r.git/': token ***"


def test_a_stop_near_the_runs_deadline_fails_turns_as_out_of_time() -> None:
    from pynchy_agent.runner import OUT_OF_TIME, STOPPING, Runner

    runner = Runner(None, None, 60, run_timeout=120)  # type: ignore[arg-type]  # only the clock is used
    assert runner._stop_message() == STOPPING  # just started: a pod deleted, a node drained, ...
    runner.started -= 115  # the kubelet's deadline counts from the pod's start, slightly earlier
    assert runner._stop_message() == OUT_OF_TIME.format(seconds=120)
    assert Runner(None, None, 60)._stop_message() == STOPPING  # type: ignore[arg-type]
