"""Run the gateway: as `pynchy gateway`, or embedded in a thread (tests, benchmarks, `pynchy dev`)."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from pynchy.gateway.app import Gateway
from pynchy.gateway.settings import GatewaySettings
from pynchy.kube.api import load_client
from pynchy.kube.official import new_client_from_config
from pynchy.settings import load

T = TypeVar("T")


def run_forever() -> None:
    """Blocking entry point; settings are validated first (fail fast, clear message)."""
    settings = load(GatewaySettings)

    async def main() -> None:
        gateway = Gateway(settings, load_client())
        await gateway.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await gateway.stop()

    asyncio.run(main())


class EmbeddedGateway:
    """The gateway on its own event loop in a background thread; `call()` runs coroutines on it."""

    def __init__(self, kubeconfig: Path | None = None, **overrides: Any) -> None:
        self.settings = load(GatewaySettings, **overrides)
        self.kubeconfig = kubeconfig
        self.gateway: Gateway | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pynchy-gateway", daemon=True)

    @property
    def url(self) -> str:
        assert self.gateway is not None
        return f"http://127.0.0.1:{self.gateway.port}"

    @property
    def metrics_url(self) -> str:
        assert self.gateway is not None
        assert self.gateway.metrics_port, "started with a metrics_port"
        return f"http://127.0.0.1:{self.gateway.metrics_port}/metrics"

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 60.0) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def start(self) -> EmbeddedGateway:
        self._thread.start()

        async def boot() -> Gateway:
            client = load_client() if self.kubeconfig is None else new_client_from_config(str(self.kubeconfig))
            gateway = Gateway(self.settings, client)
            await gateway.start()
            return gateway

        self.gateway = self.call(boot())
        return self

    def stop(self) -> None:
        if self.gateway is not None:
            self.call(self.gateway.stop())
            self.gateway = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> EmbeddedGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
