"""The dev node's side of a sandbox relay: a Unix socket whose connections are joined to a TCP address.

A sandbox has no network but loopback. Its launcher listens on the sandbox's loopback and
connects each client to one of these sockets (bound into the sandbox); here each connection is
joined to the real address. The sockets are the only way out of a sandbox, one per address the
dev node was told pods may reach (the gateway).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from pynchy.logs import get_logger

log = get_logger(__name__)

SANDBOX_RELAY_DIR = "/run/pynchy/relay"  # where the sockets appear inside a sandbox
_CHUNK = 1 << 16

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then half-close, so request/response protocols finish cleanly."""
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def join(
    connect: Callable[[], Awaitable[Streams]], client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
) -> None:
    """Connect to the far side and copy both ways; a far side that is down closes the client."""
    try:
        up_r, up_w = await connect()
    except OSError as exc:
        log.debug("relay target unreachable", error=str(exc))
        client_w.close()
        return
    try:
        await asyncio.gather(_pump(client_r, up_w), _pump(up_r, client_w))
    finally:
        up_w.close()
        client_w.close()


@dataclass(frozen=True)
class Address:
    """A TCP address pods may reach: the same host and port inside the sandbox as outside."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        """``HOST:PORT`` (an IPv6 host in brackets)."""
        host, sep, port = text.rpartition(":")
        if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise ValueError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:8080)")
        return cls(host.strip("[]"), int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes with the terminating NUL; keep a margin


@dataclass
class Relays:
    """One Unix socket per address, in ``home`` (the dev node's data dir) or, when that path
    is too long for a socket, in a private directory under /tmp."""

    addresses: tuple[Address, ...]
    home: Path
    directory: Path = field(init=False)
    _servers: list[asyncio.Server] = field(default_factory=list, init=False)
    _private: bool = field(default=False, init=False)

    def socket_name(self, index: int) -> str:
        return f"{index}.sock"

    def launcher_args(self) -> list[str]:
        """``--relay`` arguments of the sandbox launcher: listen on the address, join to the socket."""
        args: list[str] = []
        for i, a in enumerate(self.addresses):
            args += ["--relay", f"{a.host}:{a.port}={SANDBOX_RELAY_DIR}/{self.socket_name(i)}"]
        return args

    async def start(self) -> None:
        longest = self.home / "relay" / self.socket_name(len(self.addresses))
        if len(str(longest)) <= MAX_SOCKET_PATH:
            self.directory = self.home / "relay"
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        else:
            self.directory, self._private = Path(tempfile.mkdtemp(prefix="pynchy-relay-")), True
        os.chmod(self.directory, 0o700)
        for i, a in enumerate(self.addresses):
            path = self.directory / self.socket_name(i)
            connect = functools.partial(asyncio.open_connection, a.host, a.port)
            server = await asyncio.start_unix_server(functools.partial(join, connect), str(path))
            self._servers.append(server)
        log.info("sandbox relays ready", addresses=[str(a) for a in self.addresses])

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()
        if not hasattr(self, "directory"):
            return
        if self._private:
            shutil.rmtree(self.directory, ignore_errors=True)
        else:
            for i in range(len(self.addresses)):
                (self.directory / self.socket_name(i)).unlink(missing_ok=True)
