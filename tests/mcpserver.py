"""A small real MCP server (the `mcp` SDK's MCPServer on uvicorn) on loopback (or `host`), in its own
thread, for tests that drive it from synchronous code: its tools record that they ran, and every HTTP
request's headers are kept, so a test can see what reached the server (and what did not)."""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer


@dataclass
class NotesServer:
    """Two tools, `add_note(text)` and `list_notes()`, over streamable HTTP ('http') or SSE ('sse')."""

    transport: str = "http"
    notes: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None
    port: int = 0  # where to listen (0: a free port); the port listened on once started
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}" + ("/mcp" if self.transport == "http" else "/sse")

    def _app(self) -> Any:
        server = MCPServer("notes")

        @server.tool()
        def add_note(text: str) -> str:
            """Write down a note."""
            with self._lock:
                self.notes.append(text)
            return f"noted: {text}"

        @server.tool()
        def list_notes() -> str:
            """The notes written so far."""
            with self._lock:
                return "\n".join(self.notes) or "no notes"

        # The SDK checks the Host header (DNS rebinding protection) only for a loopback host.
        app = server.streamable_http_app(host=self.host) if self.transport == "http" else server.sse_app(host=self.host)

        async def recording(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                with self._lock:
                    self.headers.append({k.decode().lower(): v.decode() for k, v in scope["headers"]})
            await app(scope, receive, send)

        return recording

    def start(self) -> NotesServer:
        sock = socket.socket()
        sock.bind((self.host, self.port))
        sock.listen()  # connections wait in the backlog until uvicorn serves
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self._app(), log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])), name="mcp-notes", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> NotesServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def seen_header(self, name: str) -> list[str]:
        with self._lock:
            return [h[name.lower()] for h in self.headers if name.lower() in h]
