"""Inside a dev-node sandbox: serve the relays on loopback, run the container's command, pass on its exit.

Run by path with ``python -I -S`` as the sandbox's first process (bubblewrap's reaper is PID 1),
so it imports only C modules of the standard library (``_socket`` and ``_thread``, not
``socket`` and ``threading``, whose imports cost 25 ms) and never the ``pynchy`` package: it is
on the path of every pod start. Each ``--relay HOST:PORT=SOCKET``
listens on HOST:PORT (the sandbox's own loopback) and joins every connection to the Unix socket
SOCKET, which the dev node serves as the real address outside. So ``http://127.0.0.1:8080``
means the gateway inside the sandbox too, while nothing else outside it can be reached.
``--memory-limit BYTES`` sets RLIMIT_DATA of the command (and so of each process it starts):
the container's memory limit, per process, as far as it maps without cgroups.

The dev node signals the whole process group: the command gets SIGTERM itself, and this process
ignores it so the relays keep working while the command shuts down. Exit status: the command's,
128+N when a signal N killed it, 128 when it could not be started (the runtime's StartError).
"""

from __future__ import annotations

import _socket
import _thread
import os
import resource
import signal
import sys

_CHUNK = 1 << 16
START_ERROR = 128

Relay = tuple[str, int, str]


def parse(argv: list[str]) -> tuple[list[Relay], list[str], int | None]:
    """``[--relay HOST:PORT=SOCKET]... [--memory-limit BYTES] -- COMMAND...``."""
    relays: list[Relay] = []
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
        relays.append((host.strip("[]"), int(port), socket_path))
        i += 2
    command = argv[i + 1 :]
    if not command:
        raise SystemExit("sandbox launcher: no command after --")
    return relays, command, memory


def _pump(src: _socket.socket, dst: _socket.socket, done: _thread.LockType | None = None) -> None:
    """Copy until end of stream, then half-close, so request/response protocols finish cleanly."""
    try:
        while data := src.recv(_CHUNK):
            dst.sendall(data)
        dst.shutdown(_socket.SHUT_WR)
    except OSError:
        for s in (src, dst):  # one side broke: end both directions
            try:  # noqa: SIM105 - contextlib costs an import on every pod start
                s.shutdown(_socket.SHUT_RDWR)
            except OSError:
                pass
    finally:
        if done is not None:
            done.release()


def _join(client: _socket.socket, socket_path: str) -> None:
    up = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        up.connect(socket_path)
    except OSError:  # the far side is down: the client sees its connection closed
        up.close()
        client.close()
        return
    back = _thread.allocate_lock()
    back.acquire()
    _thread.start_new_thread(_pump, (up, client, back))
    _pump(client, up)
    back.acquire()  # the other direction finished too
    up.close()
    client.close()


def _serve(listener: _socket.socket, socket_path: str) -> None:
    while True:
        fd, _ = listener._accept()  # type: ignore[attr-defined]  # _socket's accept; typeshed lists socket's only
        _thread.start_new_thread(_join, (_socket.socket(fileno=fd), socket_path))


def _listen(host: str, port: int) -> _socket.socket:
    family = _socket.AF_INET6 if ":" in host else _socket.AF_INET
    listener = _socket.socket(family, _socket.SOCK_STREAM)
    listener.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(128)
    return listener


def _exec(command: list[str], memory: int | None) -> None:  # pragma: no cover - the forked child
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        if memory is not None:
            # RLIMIT_DATA, not RLIMIT_AS: the CLI's JavaScript engine reserves far more address
            # space than it uses; private writable memory is what the limit is about.
            resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
        os.execvp(command[0], command)
    except OSError as exc:
        os.write(2, f'exec: "{command[0]}": {exc.strerror or exc}\n'.encode())
    os._exit(START_ERROR)


def run(relays: list[Relay], command: list[str], memory: int | None = None) -> int:
    # Listening before the command starts: its first connection waits in the backlog, never refused.
    listeners = [(_listen(host, port), path) for host, port, path in relays]
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)  # the command got it too; keep relaying until it exits
    pid = os.fork()
    if pid == 0:
        for listener, _ in listeners:
            listener.close()
        _exec(command, memory)
    for listener, path in listeners:
        _thread.start_new_thread(_serve, (listener, path))
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def main() -> None:
    relays, command, memory = parse(sys.argv[1:])
    code = run(relays, command, memory)
    sys.stdout.flush()
    os._exit(code)  # _exit: relay threads with open connections do not hold us


if __name__ == "__main__":
    main()
