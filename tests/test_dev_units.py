"""`pynchy dev` pieces that need no cluster: credentials, chat config, pid lock, ports, processes, log lines."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.helpers import wait_for
from pynchy.chat.config import load_file
from pynchy.dev import config
from pynchy.dev.components import Child, LogStream, Spec, is_routine, render_line, same_process, stop_children
from pynchy.dev.config import DevPaths
from pynchy.dev.preflight import DevError, PidLock, Port, check_ports, stale_report
from pynchy.dev.status import NOT_RUNNING, collect, exit_code, render
from pynchy.dev.supervisor import Options, Supervisor

# -- the model credential --------------------------------------------------------------------------


def test_the_api_key_from_the_environment_goes_to_the_gateway_only_as_its_own_variable() -> None:
    cred = config.model_credential({"ANTHROPIC_API_KEY": "sk-1"})
    assert cred.env == {"PYNCHY_ANTHROPIC_API_KEY": "sk-1"}
    assert cred.source == "ANTHROPIC_API_KEY"
    assert cred.notes == ()


def test_an_oauth_token_becomes_the_gateways_auth_token() -> None:
    cred = config.model_credential({"CLAUDE_CODE_OAUTH_TOKEN": "tok"})
    assert cred.env == {"PYNCHY_ANTHROPIC_AUTH_TOKEN": "tok"}


def test_with_both_the_api_key_wins_and_the_other_is_named_as_ignored() -> None:
    cred = config.model_credential({"ANTHROPIC_API_KEY": "sk-1", "CLAUDE_CODE_OAUTH_TOKEN": "tok"})
    assert cred.env == {"PYNCHY_ANTHROPIC_API_KEY": "sk-1"}
    assert cred.notes == ("CLAUDE_CODE_OAUTH_TOKEN is also set and is ignored (the model proxy uses one credential)",)


def test_the_gateways_own_variable_is_used_as_it_is() -> None:
    cred = config.model_credential({"PYNCHY_ANTHROPIC_AUTH_TOKEN": "tok", "ANTHROPIC_API_KEY": " "})
    assert cred.env == {"PYNCHY_ANTHROPIC_AUTH_TOKEN": "tok"}


def test_no_credential_is_said_plainly_and_everything_still_starts() -> None:
    cred = config.model_credential({})
    assert cred.env == {}
    [note] = cred.notes
    assert "neither ANTHROPIC_API_KEY nor CLAUDE_CODE_OAUTH_TOKEN is set" in note
    assert "Everything starts" in note


def test_slack_needs_the_bot_token_and_a_way_in() -> None:
    assert not config.slack_enabled({"PYNCHY_SLACK_BOT_TOKEN": "xoxb"})
    assert config.slack_enabled({"PYNCHY_SLACK_BOT_TOKEN": "xoxb", "PYNCHY_SLACK_APP_TOKEN": "xapp"})
    assert config.slack_enabled({"PYNCHY_SLACK_BOT_TOKEN": "xoxb", "PYNCHY_SLACK_SIGNING_SECRET": "s"})
    assert not config.slack_enabled({})


# -- files in the data dir ----------------------------------------------------------------------


def test_keys_are_generated_once_private_and_reused(tmp_path: Path) -> None:
    paths = DevPaths.at(tmp_path)
    key = config.run_token_key(paths)
    assert len(key) == 64
    assert config.run_token_key(paths) == key
    assert (paths.keys / "run-token-key").stat().st_mode & 0o777 == 0o600
    assert paths.keys.stat().st_mode & 0o777 == 0o700
    assert config.chat_token(paths) != key


def test_the_chat_config_is_what_pynchy_chat_reads(tmp_path: Path) -> None:
    path = tmp_path / "chat.yaml"
    config.write_private(path, config.chat_config_text("http://127.0.0.1:8420", "t" * 64, "default"))
    read = load_file(path)
    assert (read.gateway_url, read.token, read.namespace) == ("http://127.0.0.1:8420", "t" * 64, "default")
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_chat_config_the_user_wrote_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "chat.yaml"
    assert config.may_overwrite_chat_config(path)
    config.write_private(path, config.chat_config_text("http://127.0.0.1:8420", "t" * 64, "default"))
    assert config.may_overwrite_chat_config(path)
    path.write_text("gateway_url: https://pynchy.example.com\ntoken: mine\n")
    assert not config.may_overwrite_chat_config(path)


def test_the_data_dir_defaults_to_the_environment_then_the_xdg_location(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYNCHY_DATA_DIR", raising=False)
    assert config.default_data_dir() == Path.home() / ".local/share/pynchy/dev"
    monkeypatch.setenv("PYNCHY_DATA_DIR", "/srv/pynchy-dev")
    assert config.default_data_dir() == Path("/srv/pynchy-dev")


# -- one supervisor per data dir -------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_the_pid_lock_admits_one_supervisor_per_data_dir(tmp_path: Path) -> None:
    paths = DevPaths.at(tmp_path)
    lock = PidLock.acquire(paths)
    assert lock.stale_pid is None
    assert paths.pid_file.read_text() == f"{os.getpid()}\n"
    with pytest.raises(DevError, match=rf"already running with this data dir \({tmp_path}, pid {os.getpid()}\)"):
        PidLock.acquire(paths)
    lock.release()
    assert not paths.pid_file.exists()
    PidLock.acquire(paths).release()


def test_a_pid_file_without_its_lock_is_stale_and_reported(tmp_path: Path) -> None:
    paths = DevPaths.at(tmp_path)
    stale = _dead_pid()
    paths.pid_file.write_text(f"{stale}\n")
    lock = PidLock.acquire(paths)
    try:
        assert lock.stale_pid == stale
        note = stale_report(paths, lock)
        assert note is not None
        assert f"removed a stale pid file ({paths.pid_file}, pid {stale})" in note
    finally:
        lock.release()


def test_leftovers_of_a_killed_supervisor_are_named_with_the_command_to_stop_them(tmp_path: Path) -> None:
    paths = DevPaths.at(tmp_path)
    paths.pid_file.write_text(f"{_dead_pid()}\n")
    leftover = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        cmdline = f"{sys.executable} -c import time; time.sleep(300)"
        recycled = subprocess.Popen(["sleep", "300"])  # a live pid that now runs something else
        state = {
            "components": [
                {"name": "etcd", "pid": leftover.pid, "cmdline": cmdline},
                {"name": "gateway", "pid": recycled.pid, "cmdline": "python -m pynchy gateway"},
                {"name": "operator", "pid": _dead_pid(), "cmdline": "python -m pynchy operator"},
            ]
        }
        paths.state_file.write_text(json.dumps(state))
        wait_for(lambda: same_process(leftover.pid, cmdline), what="the leftover runs")
        lock = PidLock.acquire(paths)
        with pytest.raises(DevError) as err:
            stale_report(paths, lock)
        assert f"processes it started still run: etcd (pid {leftover.pid})." in str(err.value)
        assert f"kill {leftover.pid}`" in str(err.value)
        lock.restore_stale()
        recycled.kill()
        recycled.wait()
    finally:
        leftover.kill()
        leftover.wait()


# -- ports ---------------------------------------------------------------------------------------


def test_a_port_in_use_names_the_holder_and_the_option() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(DevError) as err:
            check_ports([Port(port, "gateway", "--gateway-port")])
    text = str(err.value)
    assert f"port {port} on 127.0.0.1 (gateway) is already in use by pid {os.getpid()} (" in text
    assert "--gateway-port <port>" in text
    check_ports([Port(port, "gateway", "--gateway-port")])  # free again


# -- child processes -----------------------------------------------------------------------------


def test_stopping_a_child_that_ignores_sigterm_kills_its_whole_group(tmp_path: Path) -> None:
    marker = tmp_path / "grandchild.pid"
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "p = subprocess.Popen(['sleep', '300'])\n"
        f"open({str(marker)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(300)\n"
    )
    child = Child(Spec("stubborn", [sys.executable, "-c", script], dict(os.environ), tmp_path / "stubborn.log"))
    child.start()
    grandchild = int(wait_for(lambda: marker.exists() and marker.read_text(), what="the grandchild"))
    assert os.getpgid(child.pid or 0) == child.pid, "the child leads its own process group"
    stop_children([child], grace=0.5)
    assert not child.alive()
    assert child.returncode == -signal.SIGKILL
    wait_for(lambda: not same_process(grandchild, None), what="the grandchild is gone too")


def test_a_child_that_exits_on_sigterm_is_not_killed(tmp_path: Path) -> None:
    child = Child(
        Spec("polite", [sys.executable, "-c", "import time; time.sleep(300)"], dict(os.environ), tmp_path / "p.log")
    )
    child.start()
    stop_children([child], grace=60)
    assert child.returncode == -signal.SIGTERM


# -- the terminal stream -------------------------------------------------------------------------


def test_structlog_json_becomes_a_readable_line() -> None:
    line = json.dumps(
        {
            "port": 8420,
            "host": "127.0.0.1",
            "event": "gateway listening",
            "level": "info",
            "logger": "pynchy.gateway.app",
            "timestamp": "2026-11-21T18:25:06.812741Z",
            "note": "two words",
        }
    )
    assert render_line(line) == '18:25:06 info    gateway listening port=8420 host=127.0.0.1 note="two words"'


def test_an_exception_is_shown_indented_under_its_line() -> None:
    line = json.dumps(
        {"event": "boom", "level": "error", "timestamp": "2026-11-21T18:25:06Z", "exception": "Traceback\n  x"}
    )
    assert render_line(line) == "18:25:06 error   boom\n    Traceback\n      x"


def test_klog_and_agent_json_lines() -> None:
    klog = "W1121 18:24:57.123456   4338 genericapiserver.go:123] Skipping API batch/v1beta1"
    assert render_line(klog) == "18:24:57 warning Skipping API batch/v1beta1"
    agent = json.dumps({"ts": "2026-11-21T18:32:16.827Z", "level": "info", "msg": "run started", "run": "r1"})
    assert render_line(agent) == "18:32:16 info    run started run=r1"
    assert render_line("plain text") is None
    assert render_line("{not json") is None


def test_routine_lines_are_left_to_the_files() -> None:
    assert is_routine(json.dumps({"event": "Handler 'group_event' succeeded.", "level": "info"}))
    assert is_routine(json.dumps({"event": "GET /healthz", "level": "info", "logger": "aiohttp.access"}))
    assert is_routine(json.dumps({"event": "x", "level": "debug"}))
    assert not is_routine(json.dumps({"event": "Handler 'group_event' failed.", "level": "error"}))
    assert not is_routine("plain")


def test_the_stream_prefixes_new_lines_and_skips_routine_ones(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    log.write_text('{"event": "old", "level": "info"}\n')
    out = io.StringIO()
    stream = LogStream(out, width=8)
    stream.follow("gateway", log)
    with log.open("a") as f:
        f.write('{"event": "new", "level": "info", "timestamp": "2026-11-21T18:25:06Z"}\n')
        f.write('{"event": "Activity \'login\' succeeded.", "level": "info"}\n')
        f.write("half a li")
    stream.flush()
    with log.open("a") as f:
        f.write("ne\n")
    stream.flush()
    stream.say("hello", prefix="dev")
    assert out.getvalue().splitlines() == [
        "gateway  | 18:25:06 info    new",
        "gateway  | half a line",
        "dev      | hello",
    ]


# -- status without a running supervisor ---------------------------------------------------------


def test_status_of_an_empty_data_dir(tmp_path: Path) -> None:
    result = collect(tmp_path)
    assert result["running"] is False
    assert exit_code(result) == NOT_RUNNING
    assert render(result).startswith(f"pynchy dev is not running (data dir {tmp_path}).")


def test_status_after_a_crash_names_the_stale_pid(tmp_path: Path) -> None:
    stale = _dead_pid()
    DevPaths.at(tmp_path).pid_file.write_text(f"{stale}\n")
    result = collect(tmp_path)
    assert result["stale_pid"] == stale
    assert f"Stale pid file: pid {stale} ended without cleaning up" in render(result)


# -- agent isolation ------------------------------------------------------------------------------


def supervisor(tmp_path: Path, *, isolation: bool) -> tuple[Supervisor, io.StringIO]:
    out = io.StringIO()
    return Supervisor(Options(data_dir=tmp_path / "dev", isolation=isolation), out), out


NOT_INSTALLED = "bubblewrap (bwrap) is not installed: install it (Debian/Ubuntu: sudo apt-get install bubblewrap)"


def test_without_bubblewrap_pynchy_dev_refuses_and_says_how_to_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pynchy.devnode.sandbox.unavailable_reason", lambda *_: NOT_INSTALLED)
    sup, _ = supervisor(tmp_path, isolation=True)
    with pytest.raises(DevError) as err:
        sup._check_isolation()
    message = str(err.value)
    assert message.startswith(f"agents cannot be sandboxed here: {NOT_INSTALLED}.")
    assert "pynchy dev --no-isolation" in message


def test_no_isolation_is_said_plainly_and_shown_in_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pynchy.devnode.sandbox.unavailable_reason", lambda *_: NOT_INSTALLED)
    sup, out = supervisor(tmp_path, isolation=False)
    sup.stream.start()
    try:
        assert sup._check_isolation() == "none (--no-isolation)"
    finally:
        sup.stream.stop()
    assert "WARNING: --no-isolation: agents run as your user" in out.getvalue()
    assert "not installed" in out.getvalue()
    assert sup._isolation_args() == ["--no-isolation"]


def test_with_bubblewrap_the_dev_node_relays_only_the_gateway(tmp_path: Path) -> None:
    sup, _ = supervisor(tmp_path, isolation=True)
    assert sup._check_isolation().startswith("bubblewrap")
    assert sup._isolation_args() == ["--relay", f"127.0.0.1:{config.DEFAULT_GATEWAY_PORT}"]
