"""`pynchy gateway` as its own process (for SIGKILL tests and benchmarks), under the gateway's
ServiceAccount, with its settings passed in the environment as in a Deployment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from conftest import RUN_TOKEN_KEY
from pynchy.kube.controlplane import free_port


class GatewayProcess:
    def __init__(self, kubeconfig: Path, data_dir: Path, *, port: int | None = None, **settings: str) -> None:
        """`port`: a restarted gateway takes its predecessor's, so agent pods reach it at the same URL."""
        self.data_dir = data_dir
        self.port = port or free_port()
        self.log_path = data_dir / "gateway.log"
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "PYNCHY_RUN_TOKEN_KEY": RUN_TOKEN_KEY,
            "PYNCHY_DATABASE_URL": f"sqlite:///{data_dir}/gateway.db",
            "PYNCHY_LISTEN_HOST": "127.0.0.1",
            "PYNCHY_LISTEN_PORT": str(self.port),
            "PYNCHY_METRICS_PORT": "0",
            "PYNCHY_LOG_FORMAT": "json",
            "PYNCHY_LOG_LEVEL": "INFO",
            **{f"PYNCHY_{k.upper()}": v for k, v in settings.items()},
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> GatewayProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pynchy", "gateway"], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway not healthy within {timeout:.0f}s:\n{self.tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when a node dies or the OOM killer strikes."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
