"""Inside a dev-node sandbox: serve the relays on loopback, run the container's command, pass on its exit.

``--memory-limit BYTES`` sets RLIMIT_DATA of the command (and so of each process it starts): the
container's memory limit, per process, as far as it maps without cgroups.

Run by path with ``python -I -S`` as the sandbox's first process (bubblewrap's reaper is PID 1),
so it imports the standard library only and never the ``pynchy`` package. Each
``--relay HOST:PORT=SOCKET`` listens on HOST:PORT (the sandbox's own loopback) and joins every
connection to the Unix socket SOCKET, which the dev node serves as the real address outside. So
``http://127.0.0.1:8080`` means the gateway inside the sandbox too, while nothing else outside
it can be reached.

The dev node signals the whole process group: the command gets SIGTERM itself, and this process
ignores it so the relays keep working while the command shuts down. Exit status: the command's,
128+N when a signal N killed it, 128 when it could not be started (the runtime's StartError).
"""

from __future__ import annotations

import asyncio
import functools
import os
import resource
import signal
import sys
from collections.abc import Awaitable, Callable

_CHUNK = 1 << 16
START_ERROR = 128


def parse(argv: list[str]) -> tuple[list[tuple[str, int, str]], list[str], int | None]:
    """``[--relay HOST:PORT=SOCKET]... [--memory-limit BYTES] -- COMMAND...``."""
    relays: list[tuple[str, int, str]] = []
    memory: int | None = None
    i = 0
    while i < len(argv) and argv[i] != "--":
        if argv[i] == "--memory-limit" and i + 1 < len(argv) and argv[i + 1].isascii() and argv[i + 1].isdigit():
            memory = int(argv[i + 1])
            i += 2
            continue
        if argv[i] != "--relay" or i + 1 >= len(argv):
            raise SystemExit(f"sandbox launcher: unexpected argument {argv[i]!r}")
        address, _, socket_path = argv[i + 1].partition("=")
        host, _, port = address.rpartition(":")
        if not (host and port.isascii() and port.isdigit() and socket_path):
            raise SystemExit(f"sandbox launcher: --relay wants HOST:PORT=SOCKET, not {argv[i + 1]!r}")
        relays.append((host, int(port), socket_path))
        i += 2
    command = argv[i + 1 :]
    if not command:
        raise SystemExit("sandbox launcher: no command after --")
    return relays, command, memory


def _limit_memory(limit: int) -> Callable[[], None]:
    def apply() -> None:  # pragma: no cover - runs in the child between fork and exec
        # RLIMIT_DATA, not RLIMIT_AS: the CLI's JavaScript engine reserves far more address space
        # than it uses; private writable memory is what the limit is about.
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    return apply


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then half-close, so request/response protocols finish cleanly."""
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def join(
    connect: Callable[[], Awaitable[Streams]], client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
) -> None:
    """Connect to the far side and copy both ways; a far side that is down closes the client."""
    try:
        up_r, up_w = await connect()
    except OSError:
        client_w.close()
        return
    try:
        await asyncio.gather(pump(client_r, up_w), pump(up_r, client_w))
    finally:
        up_w.close()
        client_w.close()


async def _main(relays: list[tuple[str, int, str]], command: list[str], memory: int | None = None) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, lambda: None)  # the command got it too; keep relaying until it exits
    for host, port, socket_path in relays:
        connect = functools.partial(asyncio.open_unix_connection, socket_path)
        await asyncio.start_server(functools.partial(join, connect), host, port)
    try:
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            preexec_fn=None if memory is None else _limit_memory(memory),
        )
    except OSError as exc:
        print(f'exec: "{command[0]}": {exc.strerror or exc}', file=sys.stderr, flush=True)
        return START_ERROR
    rc = await proc.wait()
    return 128 - rc if rc < 0 else rc


def main() -> None:
    relays, command, memory = parse(sys.argv[1:])
    os._exit(asyncio.run(_main(relays, command, memory)))  # _exit: open relay connections do not hold us


if __name__ == "__main__":
    main()
