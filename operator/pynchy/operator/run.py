"""Run the operator: as the `pynchy operator` command, or embedded in a thread (tests, `pynchy dev`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

import kopf

from pynchy.operator import handlers  # noqa: F401  (registers the handlers with kopf)
from pynchy.operator.settings import OperatorSettings
from pynchy.settings import load


def operator_kwargs(settings: OperatorSettings) -> dict[str, Any]:
    return {
        "clusterwide": not settings.namespaces,
        "namespaces": list(settings.namespaces),
        "standalone": True,  # one replica, Recreate strategy: no peering objects to write
    }


def run_forever() -> None:
    """Blocking entry point; settings are validated before kopf starts (fail fast, clear message)."""
    settings = load(OperatorSettings)
    liveness = f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None
    kopf.run(liveness_endpoint=liveness, **operator_kwargs(settings))


class EmbeddedOperator:
    """The operator in a background thread with its own event loop; `memo.controller` is inspectable.

    `clock` (a callable returning an aware UTC datetime) replaces real time for schedules.
    `metrics_port`: serve /metrics on 127.0.0.1 there (0: any free port, see `metrics_url`); None (the
    default) serves none, whatever PYNCHY_METRICS_PORT says.
    """

    def __init__(self, clock: Callable[[], dt.datetime] | None = None, metrics_port: int | None = None) -> None:
        self.memo = kopf.Memo()
        if clock is not None:
            self.memo.clock = clock
        self.memo.metrics_address = None if metrics_port is None else ("127.0.0.1", metrics_port)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self, timeout: float = 30.0) -> EmbeddedOperator:
        settings = load(OperatorSettings)
        self._thread = threading.Thread(target=self._main, args=(settings,), name="pynchy-operator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"operator did not become ready in {timeout}s: {self.error!r}")
        return self

    def _main(self, settings: OperatorSettings) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            await kopf.operator(
                memo=self.memo, stop_flag=self._stop, ready_flag=self._ready, **operator_kwargs(settings)
            )

        try:
            asyncio.run(main())
        except BaseException as exc:
            self.error = exc
            self._ready.set()

    def resync_now(self) -> None:
        """Re-check every object now (from any thread): after a test moved its clock, for example."""
        if self._loop is None:
            raise RuntimeError("the operator is not running")
        self._loop.call_soon_threadsafe(self.controller.resync_now)

    @property
    def controller(self) -> Any:
        return self.memo.controller

    @property
    def metrics_url(self) -> str:
        server = getattr(self.memo, "metrics_server", None)
        if server is None:
            raise RuntimeError("this operator serves no metrics (EmbeddedOperator(metrics_port=...))")
        return f"http://127.0.0.1:{server.port}/metrics"

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError("operator thread did not stop")
        self._thread = None

    def __enter__(self) -> EmbeddedOperator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
