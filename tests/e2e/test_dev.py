"""`pynchy dev` as a person runs it: a process, a clean data dir, `pynchy chat`, Ctrl-C, and again.

Only the Anthropic API is replaced (the scripted model); everything else is the real thing:
etcd, kube-apiserver, kube-controller-manager, gateway, operator and dev node as child
processes of `pynchy dev`, and the Claude Code CLI in an agent pod.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.helpers import wait_for
from doubles.anthropic import ScriptedModel
from pynchy.kube.controlplane import free_port

REPO = Path(__file__).resolve().parents[2]
PYNCHY = [sys.executable, "-m", "pynchy"]


def _die_with_test() -> None:  # runs in the child: a killed test run leaves no `pynchy dev` behind
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CLAUDE_CODE_OAUTH_TOKEN", "PYNCHY_CONFIG", "PYNCHY_DATA_DIR", "KUBECONFIG")
        and not k.startswith(("PYNCHY_SLACK_", "PYNCHY_ANTHROPIC_"))
    }
    return env | {"PYNCHY_LOG_FORMAT": "json"} | extra


class Dev:
    """One `pynchy dev` process and what a user would look at: its output, status, kubectl, chat."""

    def __init__(
        self,
        data_dir: Path | None,
        model: ScriptedModel | None,
        *,
        home: Path | None = None,
        gateway_port: int | None = None,
    ) -> None:
        """With `home`, everything is at its defaults under that HOME (no --data-dir, no PYNCHY_CONFIG)."""
        self.home = home
        self.data_dir = data_dir or (home or Path.home()) / ".local/share/pynchy/dev"
        self.apiserver_port = free_port()
        self.gateway_port = gateway_port or free_port()
        extra = {"ANTHROPIC_API_KEY": "dummy", "PYNCHY_MODEL_UPSTREAM_URL": model.base_url} if model else {}
        if home is not None:
            extra["HOME"] = str(home)
        self.env = _env(**extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def where(self) -> list[str]:
        return [] if self.home else ["--data-dir", str(self.data_dir)]

    @property
    def argv(self) -> list[str]:
        ports = ["--apiserver-port", str(self.apiserver_port), "--gateway-port", str(self.gateway_port)]
        return [*PYNCHY, "dev", *self.where, *ports]

    @property
    def output_path(self) -> Path:
        return (self.home or self.data_dir.parent) / f"{self.data_dir.name}-run{self.runs}.out"

    def output(self) -> str:
        return self.output_path.read_text(errors="replace") if self.output_path.exists() else ""

    def start(self) -> Dev:
        self.runs += 1
        with self.output_path.open("wb") as out:
            self.proc = subprocess.Popen(
                self.argv, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_test
            )
        return self

    def wait_ready(self, timeout: float = 240) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"pynchy dev exited with {self.proc.returncode}:\n{self.output()}")
            status = self.status()
            return status if status["ready"] else None

        try:
            return wait_for(ready, timeout=timeout, interval=1.0, what="pynchy dev ready")
        except AssertionError:
            print(self.output())
            raise

    def status(self) -> dict[str, Any]:
        proc = self.status_command("--json")
        return json.loads(proc.stdout)

    def status_command(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*PYNCHY, "dev", "status", *self.where, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        bin_dir = Path(os.environ["PYNCHY_K8S_BIN_DIR"])
        proc = subprocess.run(
            [str(bin_dir / "kubectl"), *args],
            env=self.env | {"KUBECONFIG": str(self.data_dir / "admin.kubeconfig")},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return proc

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def chat(self, message: str) -> subprocess.CompletedProcess[str]:
        """What the start-up banner says to run, non-interactively."""
        config = {} if self.home else {"PYNCHY_CONFIG": str(self.data_dir / "chat.yaml")}
        return subprocess.run(
            [*PYNCHY, "chat", "demo", "-m", message, "--timeout", "180"],
            env=self.env | config,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )

    def stop(self, sig: int = signal.SIGINT, timeout: float = 120) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(self.output())
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as m:
        yield m


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def processes_using(data_dir: Path) -> list[str]:
    """Live processes whose command line names the data dir or whose working directory is inside it."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if _alive(int(entry.name)) and (str(data_dir) in cmdline or cwd.startswith(str(data_dir))):
            found.append(f"{entry.name}: {cmdline[:160]} (cwd {cwd})")
    return found


def agent_pids(dev: Dev) -> list[int]:
    pods = dev.get("pods", "-A")["items"]
    pids = []
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            cid = cs.get("containerID") or ""
            if cid.startswith("pynchy-devnode://") and "running" in (cs.get("state") or {}):
                pids.append(int(cid.rsplit("/", 1)[1]))
    return pids


def test_pynchy_dev_from_a_clean_data_dir_chat_restart_and_the_conversation_resumes(
    model: ScriptedModel, tmp_path: Path
) -> None:
    """Everything at its defaults, under a HOME of its own: ~/.local/share/pynchy/dev, ~/.config/pynchy/chat.yaml."""
    home = tmp_path / "home"
    home.mkdir()
    dev = Dev(None, model, home=home).start()
    try:
        first = dev.wait_ready()
        print(f"\npynchy dev: ready in {first['ready_seconds']}s from a clean data dir")
        assert first["data_dir"] == str(home / ".local/share/pynchy/dev")

        # What it printed: how to use kubectl and how to chat.
        out = dev.output()
        assert f"export KUBECONFIG={dev.data_dir}/admin.kubeconfig" in out
        assert "kubectl get groups" in out
        assert "pynchy chat demo\n" in out
        assert "PYNCHY_CONFIG" not in out, "the default data dir writes the chat config where `pynchy chat` looks"
        assert (home / ".config/pynchy/chat.yaml").read_text() == (dev.data_dir / "chat.yaml").read_text()
        assert "created Group default/demo" in out
        assert "isolation: each agent pod in a bubblewrap" in out
        assert first["isolation"].startswith("bubblewrap"), first

        # Status: every component alive and healthy, the demo Group Ready.
        names = [c["name"] for c in first["components"]]
        assert names == ["etcd", "kube-apiserver", "kube-controller-manager", "gateway", "operator", "devnode"]
        assert all(c["alive"] and c["health"] == "ok" and c["pid"] for c in first["components"]), first
        [demo] = first["groups"]
        assert (demo["namespace"], demo["name"], demo["ready"], demo["channels"]) == (
            "default",
            "demo",
            "True",
            "local:demo",
        )
        text = dev.status_command()
        assert text.returncode == 0, text.stdout + text.stderr
        assert "devnode" in text.stdout
        assert "demo" in text.stdout
        assert "agent isolation: bubblewrap" in text.stdout

        # A second `pynchy dev` on the same data dir is refused, naming the running one.
        second = subprocess.run(dev.argv, env=dev.env, capture_output=True, text=True, timeout=60, check=False)
        assert second.returncode == 1
        assert "already running" in second.stderr
        assert f"pid {dev.proc.pid}" in second.stderr  # type: ignore[union-attr]

        # The README's example Group applies cleanly on top of the one `pynchy dev` created.
        applied = dev.kubectl("apply", "-f", "manifests/examples/group-local.yaml")
        assert "group.pynchy.dev/demo" in applied.stdout

        # One turn through `pynchy chat`, answered by an agent pod on the dev node.
        model.on_prompt("my name is Ada", "Nice to meet you, Ada.")
        reply = dev.chat("hello, my name is Ada")
        assert reply.returncode == 0, reply.stdout + reply.stderr
        assert "Nice to meet you, Ada." in reply.stdout
        [run] = dev.get("agentruns", "-n", "default")["items"]
        session = wait_for(
            lambda: (dev.get("agentrun", run["metadata"]["name"], "-n", "default").get("status") or {}).get(
                "sessionId"
            ),
            what="the run reports its session",
        )
        status = dev.status()
        assert [r["name"] for r in status["runs"]] == [run["metadata"]["name"]]
        assert status["runs"][0]["turns"] == 1

        # A component that dies is reported and restarted (its state is in the API server and the store).
        gateway = next(c for c in status["components"] if c["name"] == "gateway")
        os.kill(gateway["pid"], signal.SIGKILL)

        def gateway_back() -> dict[str, Any] | None:
            s = dev.status()
            g = next(c for c in s["components"] if c["name"] == "gateway")
            return s if g["restarts"] == 1 and g["alive"] and g["health"] == "ok" else None

        status = wait_for(gateway_back, timeout=120, interval=1.0, what="the gateway restarted")
        assert f"gateway (pid {gateway['pid']}) exited with code -9" in dev.output()
        agents = agent_pids(dev)
        assert agents, "the agent pod runs as a local process"

        # Ctrl-C, as delivered through `uv run` (the terminal's SIGINT and uv's copy of it): everything
        # stops gracefully, nothing is left running.
        pids = [c["pid"] for c in status["components"]] + agents
        assert dev.proc is not None
        dev.proc.send_signal(signal.SIGINT)
        assert dev.stop(signal.SIGINT) == 0, dev.output()
        assert [p for p in pids if _alive(p)] == []
        assert processes_using(dev.data_dir) == []
        assert "stopped; state kept in" in dev.output()
        assert "second signal" not in dev.output()
        stopped = dev.status_command()
        assert stopped.returncode == 3
        assert "not running" in stopped.stdout

        # Again, on the same data dir: the demo Group is kept, the conversation continues.
        again = dev.start().wait_ready()
        print(f"pynchy dev: ready in {again['ready_seconds']}s on the same data dir")
        assert "created Group" not in dev.output()
        assert "stale" not in dev.output()
        model.on_prompt("what is my name", "Your name is Ada.")
        reply = dev.chat("what is my name?")
        assert reply.returncode == 0, reply.stdout + reply.stderr
        assert "Your name is Ada." in reply.stdout
        history = json.dumps(model.main_requests[-1].body["messages"])
        assert "hello, my name is Ada" in history, "the agent sees the turn from before the restart"
        runs = dev.get("agentruns", "-n", "default")["items"]
        latest = max(runs, key=lambda r: r["metadata"]["creationTimestamp"])
        assert latest["metadata"]["name"] != run["metadata"]["name"]
        wait_for(
            lambda: (
                (dev.get("agentrun", latest["metadata"]["name"], "-n", "default").get("status") or {}).get("sessionId")
                == session
            ),
            what="the new run resumes the same session",
        )

        # SIGTERM stops it as well.
        assert dev.stop(signal.SIGTERM) == 0, dev.output()
        assert processes_using(dev.data_dir) == []
    finally:
        dev.kill()


def test_a_component_that_cannot_start_stops_everything_with_its_own_message(tmp_path: Path) -> None:
    """The Slack variables reach the gateway as they are; a half-configured Slack is the gateway's
    settings error, shown by `pynchy dev`, which then stops what it started and exits 1."""
    dev = Dev(tmp_path / "dev", None)
    dev.env["PYNCHY_SLACK_BOT_TOKEN"] = "xoxb-0000"
    dev.start()
    try:
        assert dev.proc is not None
        assert dev.proc.wait(240) == 1, dev.output()
    finally:
        dev.kill()
    out = dev.output()
    assert "gateway exited during start-up with code 1" in out
    assert "PYNCHY_SLACK_BOT_TOKEN is set but Slack events have no way in" in out
    assert "stopped; state kept in" in out
    assert processes_using(dev.data_dir) == []


# -- refusals that happen before anything starts ------------------------------------------------


def test_a_port_in_use_is_named_with_its_process_and_the_flag_that_changes_it(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        dev = Dev(tmp_path / "dev", None, gateway_port=port)
        proc = subprocess.run(dev.argv, env=dev.env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert f"port {port} on 127.0.0.1 (gateway" in proc.stderr
    assert f"is already in use by pid {os.getpid()}" in proc.stderr
    assert "--gateway-port" in proc.stderr
    assert not (tmp_path / "dev" / "etcd").exists(), "nothing was started"
    assert not (tmp_path / "dev" / "dev.pid").exists()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_stale_pid_file_is_reported_and_removed(tmp_path: Path) -> None:
    data = tmp_path / "dev"
    data.mkdir()
    stale = _dead_pid()
    (data / "dev.pid").write_text(f"{stale}\n")
    with socket.socket() as busy:  # stops the run right after the pid check, before the control plane
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        dev = Dev(data, None, gateway_port=busy.getsockname()[1])
        proc = subprocess.run(dev.argv, env=dev.env, capture_output=True, text=True, timeout=60, check=False)
    assert f"removed a stale pid file ({data / 'dev.pid'}, pid {stale})" in proc.stdout
    assert proc.returncode == 1
    assert "already in use" in proc.stderr
    assert not (data / "dev.pid").exists()


def test_a_stale_pid_file_whose_processes_still_run_says_which_to_stop(tmp_path: Path) -> None:
    data = tmp_path / "dev"
    data.mkdir()
    stale = _dead_pid()
    (data / "dev.pid").write_text(f"{stale}\n")
    leftover = subprocess.Popen(["sleep", "300"])
    try:
        cmdline = "sleep 300"
        wait_for(lambda: Path(f"/proc/{leftover.pid}/cmdline").read_bytes() == b"sleep\x00300\x00", what="exec")
        state = {"components": [{"name": "etcd", "pid": leftover.pid, "cmdline": cmdline}]}
        (data / "dev-state.json").write_text(json.dumps(state))
        dev = Dev(data, None)
        proc = subprocess.run(dev.argv, env=dev.env, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 1
        assert f"stale pid file {data / 'dev.pid'}" in proc.stderr
        assert f"etcd (pid {leftover.pid})" in proc.stderr
        assert f"kill {leftover.pid}" in proc.stderr
        assert (data / "dev.pid").read_text().strip() == str(stale), "kept, so the next start says the same"
        assert leftover.poll() is None, "pynchy dev reports leftovers; it does not kill what it did not start"
    finally:
        leftover.kill()
        leftover.wait()
    with contextlib.suppress(FileNotFoundError):
        (data / "dev.pid").unlink()


def test_status_of_a_data_dir_where_nothing_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*PYNCHY, "dev", "status", "--data-dir", str(tmp_path / "none")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 3
    assert f"pynchy dev is not running (data dir {tmp_path / 'none'})" in proc.stdout
