"""The dev node's sandbox, tried from inside: the real Claude Code CLI runs what the scripted model
tells its Bash tool, and every way out of the pod that the sandbox must close is tried and fails.

The normal path runs sandboxed in every other end-to-end test (a chat turn, files on the Workspace
volume, a session resumed by a second pod: test_agent_runs.py, test_chat.py, test_dev.py).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.helpers import get, wait_for
from doubles.anthropic import tool_use
from e2e.conftest import MODEL_KEY, Stack
from e2e.helpers import apply, ask, ready_group, run_status, runs

CANARY = "pynchy-isolation-canary-" + secrets.token_hex(8)  # a secret: never in a file's or variable's name


def host_ip() -> str:
    """An address of this machine that is not loopback (where a 0.0.0.0 listener is reachable)."""
    for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
        address = str(info[4][0])
        if not address.startswith("127."):
            return address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # no packet is sent by connect() on UDP
        s.connect(("10.255.255.254", 9))
        return str(s.getsockname()[0])


@pytest.fixture
def listeners() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Two TCP listeners on the host: one on 127.0.0.1, one on every address."""
    local = socket.create_server(("127.0.0.1", 0))
    everywhere = socket.create_server(("0.0.0.0", 0))
    try:
        yield local, everywhere
    finally:
        local.close()
        everywhere.close()


@pytest.fixture
def home_canary() -> Iterator[Path]:
    """A file in the invoking user's HOME, outside the dev node's data dir."""
    path = Path.home() / f".pynchy-isolation-test-{os.getpid()}"
    path.write_text(CANARY)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def bash_result(stack: Stack) -> str:
    [result] = [r for r in stack.model.main_requests[-1].tool_results() if r.name == "Bash"]
    return result.text


def marks(output: str) -> dict[str, str]:
    """``name=value`` lines of the probe's output."""
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line and " " not in line.split("=")[0])


def probe_script(checks: dict[str, str]) -> str:
    """Each check's command, its exit status printed as ``name=<status>`` (stdout and stderr kept)."""
    return "\n".join(f"( {cmd} ) 2>&1; echo {name}=$?" for name, cmd in checks.items())


def test_nothing_outside_the_pod_is_reachable_from_its_sandbox(
    stack: Stack,
    listeners: tuple[socket.socket, socket.socket],
    home_canary: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The gateway runs in this process: its environment holds a secret the agent must not read.
    monkeypatch.setenv("PYNCHY_ISOLATION_SECRET", CANARY)
    gateway_pid = os.getpid()
    local, everywhere = listeners
    local_port, any_port = local.getsockname()[1], everywhere.getsockname()[1]

    # Another Group's volume, with a file in it, on the same dev node.
    ready_group(stack, "alpha")
    stack.model.on_prompt("keep this", tool_use("Bash", command=f"echo {CANARY} > $HOME/alpha-secret.txt; echo ok"))
    stack.model.after_tool("Bash", "Kept.")
    assert ask(stack, "alpha", "keep this safe").text == "Kept."
    [neighbour_file] = wait_for(lambda: list((stack.data_dir / "volumes").rglob("alpha-secret.txt")))
    assert CANARY in neighbour_file.read_text()

    ready_group(stack, "beta")
    checks = {
        "home": f"cat {home_canary}",
        "neighbour": f"cat {neighbour_file}",
        "volumes": f"ls {stack.data_dir}",
        "gateway_environ": f"cat /proc/{gateway_pid}/environ",
        "processes": "for f in /proc/[0-9]*/cmdline; do printf 'proc:'; tr '\\0' ' ' < $f; echo; done",
        "loopback_port": f"exec 3<>/dev/tcp/127.0.0.1/{local_port}",
        "any_port_loopback": f"exec 3<>/dev/tcp/127.0.0.1/{any_port}",
        "any_port_host_ip": f"exec 3<>/dev/tcp/{host_ip()}/{any_port}",
        "write_usr": "touch /usr/probe",
        "write_etc": "touch /etc/probe",
        "write_root": "touch /probe",
        "write_venv": f"touch {Path(os.__file__).parent}/probe",
        "write_workspace": "touch /workspace/probe",
        "write_home": "touch $HOME/probe",
        "write_tmp": "touch $TMPDIR/probe",
        "uid": "test $(id -u) = 1000 && test $(id -g) = 1000",
    }
    stack.model.on_prompt("look around", tool_use("Bash", command=probe_script(checks)))
    stack.model.after_tool("Bash", "Looked.")
    assert ask(stack, "beta", "look around please").text == "Looked."
    output = bash_result(stack)
    status = marks(output)
    assert set(checks) <= set(status), output

    refused = [
        "home",
        "neighbour",
        "volumes",
        "gateway_environ",
        "loopback_port",
        "any_port_loopback",
        "any_port_host_ip",
        "write_usr",
        "write_etc",
        "write_root",
        "write_venv",
    ]
    assert {k: status[k] for k in refused if status[k] == "0"} == {}, output
    # The sandbox's own processes only (bubblewrap's init, the launcher, the agent, the CLI, its
    # shell); nothing of the host: not this test process (the gateway), the control plane or init.
    programs = [line.removeprefix("proc:").split(" ")[0] for line in output.splitlines() if line.startswith("proc:")]
    assert "/bin/bash" in programs, output
    sandbox_programs = {"bwrap", "python", "claude", "bash", "tr"}
    assert {Path(p).name.rstrip("0123456789.") for p in programs} <= sandbox_programs, programs
    assert CANARY not in output, output  # neither the HOME file, the neighbour's file nor the environment
    assert "No such file or directory" in output  # HOME and data dir paths are simply not there
    assert "Read-only file system" in output, output
    for k in ("write_workspace", "write_home", "write_tmp", "uid"):
        assert status[k] == "0", (k, output)

    # Nothing reached either listener: the sandbox's connects failed before the host saw them.
    for server in listeners:
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()

    # The gateway, the one address relayed in, served both turns, with the real key added outside.
    assert {r.header("x-api-key") for r in stack.model.message_requests} == {MODEL_KEY}


EGRESS_GROUP: dict[str, Any] = {
    "apiVersion": "pynchy.dev/v1alpha1",
    "kind": "Group",
    "metadata": {"name": "wanderer"},
    "spec": {
        "channels": [{"local": {"name": "wanderer"}}],
        "network": {"egress": [{"cidr": "203.0.113.0/24", "ports": [{"port": 443}]}]},
    },
}


def test_a_group_allowed_more_egress_than_a_sandbox_gives_is_refused_with_the_reason(stack: Stack) -> None:
    apply(stack, json.dumps(EGRESS_GROUP))
    wait_for(lambda: (get(stack.plane, "group", "wanderer", stack.namespace) or {}).get("status"), what="status")
    gw = stack.gateway.gateway
    assert gw is not None
    wait_for(lambda: gw.groups.get(stack.namespace, "wanderer"), what="the gateway sees the Group")
    stack.gateway.call(gw.submit(stack.namespace, "wanderer", "hello"))
    [run] = wait_for(lambda: runs(stack), what="a run")
    name = run["metadata"]["name"]
    pod = wait_for(
        lambda: (p := get(stack.plane, "pod", name, stack.namespace)) and p["status"].get("phase") == "Failed" and p,
        timeout=90,
        what="the pod refused",
    )
    assert pod["status"]["reason"] == "DevNodeUnsupported", pod["status"]
    message = pod["status"]["message"]
    assert "203.0.113.0/24 port 443/TCP" in message, message
    assert "--no-isolation" in message, message
    assert "real node" in message, message
    status = wait_for(lambda: run_status(stack, name).get("phase") == "Failed" and run_status(stack, name), timeout=90)
    assert "203.0.113.0/24" in status["message"], status
