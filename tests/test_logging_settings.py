"""Logging format selection and start-up validation of settings."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from pynchy.logs import choose_format, configure_logging, get_logger
from pynchy.settings import ControlPlaneSettings, LogSettings, SettingsExit, load


def test_format_follows_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYNCHY_LOG_FORMAT", raising=False)
    assert choose_format(stream_is_tty=True) == "console"
    assert choose_format(stream_is_tty=False) == "json"
    monkeypatch.setenv("PYNCHY_LOG_FORMAT", "json")
    assert choose_format(stream_is_tty=True) == "json"
    monkeypatch.setenv("PYNCHY_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="PYNCHY_LOG_FORMAT must be 'json' or 'console'"):
        choose_format()


def test_json_lines_from_structlog_and_stdlib() -> None:
    code = (
        "import logging\n"
        "from pynchy.logs import configure_logging, get_logger\n"
        "configure_logging('INFO', 'json')\n"
        "get_logger('pynchy.test').info('hello', group='family')\n"
        "logging.getLogger('kopf.objects').warning('from stdlib')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = [json.loads(line) for line in proc.stderr.splitlines()]
    assert lines[0]["event"] == "hello"
    assert lines[0]["group"] == "family"
    assert lines[0]["level"] == "info"
    assert "timestamp" in lines[0]
    assert lines[1]["event"] == "from stdlib"
    assert lines[1]["logger"] == "kopf.objects"


def test_bad_level_is_refused() -> None:
    with pytest.raises(ValueError, match="PYNCHY_LOG_LEVEL"):
        configure_logging("LOUD", "json")
    configure_logging("INFO", "console")
    assert logging.getLogger().level == logging.INFO
    get_logger(__name__).info("console works")


def test_invalid_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNCHY_LOG_LEVEL", "chatty")
    with pytest.raises(SettingsExit) as err:
        load(LogSettings)
    assert "PYNCHY_LOG_LEVEL" in str(err.value)


def test_control_plane_settings_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("PYNCHY_K8S_CACHE", str(tmp_path))
    assert load(ControlPlaneSettings).cache == tmp_path


def test_cli_rejects_a_bad_log_format() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pynchy", "--log-format", "xml", "crds", "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "xml" in proc.stderr
