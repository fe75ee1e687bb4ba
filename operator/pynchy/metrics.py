"""Prometheus exposition shared by the gateway and the operator: a registry of our own (never the
client library's global one, so several embedded processes in one test process do not collide)
rendered as an aiohttp response, and a small HTTP server for a process that has no app of its own.

Label values are bounded by what exists (Groups, models, channels, kinds), never per message or run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest

from pynchy.logs import get_logger

log = get_logger(__name__)
METRICS_PATH = "/metrics"


def new_registry() -> CollectorRegistry:
    """A registry with the process collector (CPU, memory, open files) and nothing global."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    return registry


def group_label(namespace: str, name: str) -> str:
    """The `group` label of every per-Group series: `namespace/name`."""
    return f"{namespace}/{name}"


def exposition(registry: CollectorRegistry) -> web.Response:
    """The registry in Prometheus' text format (aiohttp's content_type= refuses the charset parameter)."""
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class MetricsServer:
    """`GET /metrics` of one registry on its own port. Runs on the caller's event loop, so collectors
    may read that loop's state; `refresh` (if given) runs before each scrape to update gauges.
    `routes` are more GET handlers on the same port, by path (the gateway's `/status`)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        refresh: Callable[[], Awaitable[None]] | None = None,
        routes: Mapping[str, Handler] | None = None,
    ) -> None:
        self.registry = registry
        self.refresh = refresh
        self.routes = dict(routes or {})
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        """Listen on host:port (0: any free port, then see `.port`). Raises OSError when it cannot."""
        app = web.Application()
        app.router.add_get(METRICS_PATH, self._metrics)
        for path, handler in self.routes.items():
            app.router.add_get(path, handler)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("metrics listening", host=host, port=self.port, path=METRICS_PATH)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        if self.refresh is not None:
            await self.refresh()
        return exposition(self.registry)
