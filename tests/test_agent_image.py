"""The agent image's Dockerfile, read with a small parser: a non-root runtime stage without build tools,
whose entry point is the runner's console script."""

from __future__ import annotations

import importlib
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
AGENT_IMAGE = REPO / "agent-image"
BUILD_TOOLS = (
    "build-essential",
    "gcc",
    "g++",
    "clang",
    "make",
    "cmake",
    "python3-dev",
    "libc6-dev",
    "libffi-dev",
    "libssl-dev",
    "pkg-config",
    "cargo",
    "rustc",
)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages): continuation lines joined, comments dropped, ${ARG} in FROM resolved."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(" ".join((current + line).split()))
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"

    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile((AGENT_IMAGE / "Dockerfile").read_text())[1]


def test_the_parser_joins_lines_and_resolves_args() -> None:
    args, parsed = parse_dockerfile(
        "# comment\nARG BASE=debian:12\nFROM ${BASE} AS one\nRUN a \\\n  # inner comment\n  && b\nFROM one\nUSER 5\n"
    )
    assert args == {"BASE": "debian:12"}
    assert [(s.base, s.name) for s in parsed] == [("debian:12", "one"), ("one", None)]
    assert parsed[0].all("RUN") == ["a && b"]
    assert parsed[1].last("USER") == "5"


def test_multi_stage_with_a_slim_python_runtime(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    final = stages[-1]
    assert final.base.startswith("python:3.11-slim")
    build = next(s for s in stages if s.name == "build")
    assert build.base == final.base  # the venv's interpreter path exists in the runtime stage
    assert any("uv sync" in run and "--frozen" in run for run in build.all("RUN"))
    assert any(copy.startswith("--from=build /opt/venv") for copy in final.all("COPY"))


def test_the_runtime_stage_runs_as_uid_1000_named_agent(stages: list[Stage]) -> None:
    final = stages[-1]
    user = final.last("USER")
    assert user is not None
    assert user.split(":")[0] == "1000"
    setup = " ".join(final.all("RUN"))
    assert re.search(r"groupadd --gid 1000 agent", setup)
    assert re.search(r"useradd --uid 1000 --gid 1000 --home-dir /home/agent --create-home .*agent", setup)
    assert final.last("WORKDIR") == "/workspace"
    assert "HOME=/home/agent" in " ".join(final.all("ENV"))


def test_the_runtime_stage_has_git_and_certificates_but_no_build_tools(stages: list[Stage]) -> None:
    final = stages[-1]
    installs = []
    for run in final.all("RUN"):
        for command in run.split("&&"):
            words = shlex.split(command)
            if words[:2] == ["apt-get", "install"]:
                installs += [w for w in words[2:] if not w.startswith("-")]
            assert words[:2] != ["pip", "install"], "the runtime stage installs no Python packages"
            assert not (words and words[0] in ("uv", "pip", "pip3")), command
    assert {"git", "ca-certificates", "openssh-client"} <= set(installs)
    assert not set(installs) & set(BUILD_TOOLS)
    assert "--no-install-recommends" in " ".join(final.all("RUN"))  # recommends would pull in compilers
    assert not any("--from=uv" in copy for copy in final.all("COPY"))


def test_the_entrypoint_is_the_runners_console_script(stages: list[Stage]) -> None:
    entrypoint = json.loads(stages[-1].last("ENTRYPOINT") or "null")
    assert entrypoint == ["pynchy-agent"]
    scripts = tomllib.loads((AGENT_IMAGE / "pyproject.toml").read_text())["project"]["scripts"]
    module_name, _, function_name = scripts[entrypoint[0]].partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    assert callable(function)
    assert (module_name, function_name) == ("pynchy_agent.runner", "main")


def test_everything_the_build_copies_exists_and_is_let_through_the_dockerignore(stages: list[Stage]) -> None:
    sources = []
    for stage in stages:
        for copy in stage.all("COPY"):
            words = copy.split()
            if any(w.startswith("--from=") for w in words):
                continue
            sources += words[:-1]
    assert sources
    allowed = [
        line[1:] for line in (AGENT_IMAGE / "Dockerfile.dockerignore").read_text().splitlines() if line.startswith("!")
    ]
    for source in sources:
        assert (REPO / source).exists(), source
        assert any(source == a or source.startswith(a + "/") for a in allowed), source
