"""An aiohttp server in a background thread with its own event loop: 127.0.0.1 on a free port unless
told otherwise (a real node's pods reach the host only at its link address)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from pathlib import Path
from typing import Any, Self

from aiohttp import web


class ThreadedServer:
    """Subclasses implement `_handle(request)`; every path and method goes there."""

    name = "test-server"

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.ssl_context: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping = threading.Event()
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://{self.host}:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    async def _wait_for(self, event: threading.Event, timeout: float | None = None) -> bool:
        """Wait (without blocking the server) until a test thread sets `event`, or the server stops."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not event.is_set() and not self._stopping.is_set():
            if deadline is not None and loop.time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return event.is_set()

    def listen_on(self, host: str, port: int = 0) -> Self:
        """Bind to `host`:`port` instead of a free loopback port (call before start)."""
        self.host, self.port = host, port
        return self

    def with_tls(self, cert: Path, key: Path) -> Self:
        """Serve HTTPS with this certificate (call before start)."""
        self.ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ssl_context.load_cert_chain(cert, key)
        return self

    def start(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start_site(sock))
            except BaseException as exc:
                failure.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()
            if self._runner is not None:
                loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name=self.name, daemon=True)
        self._thread.start()
        started.wait(10)
        if failure:
            raise failure[0]
        return self

    async def _start_site(self, sock: socket.socket) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1)
        await self._runner.setup()
        await web.SockSite(self._runner, sock, ssl_context=self.ssl_context).start()

    def stop(self) -> None:
        self._stopping.set()
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
