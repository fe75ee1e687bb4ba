"""Asyncio primitives shared by the gateway and the operator, each tested once (tests/test_aio.py).

Keyed in-process state is where memory leaks hide: a dict entry made for every key ever seen and
never dropped. Each primitive here says in its docstring how long what it holds lives, and keeps
nothing past that:

- `KeyedLocks`: one lock per key, while a task holds or waits for it.
- `KeyedSignals`: one wake-up per key for long-polls, while someone listens on it.
- `TaskSet`: background tasks, from `spawn()` until they end or `close()` cancels them.
- `LogOnce`: keys already reported, the most recent `limit` of them.

All of them belong to one event loop and are not thread-safe (call them from that loop only)."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections import OrderedDict
from collections.abc import Coroutine, Hashable, Iterator
from typing import Any, Generic, TypeVar

from pynchy.logs import get_logger

log = get_logger(__name__)

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class KeyedLocks(Generic[K]):
    """One asyncio.Lock per key: `async with locks(key): ...` excludes every other task using the
    same key, and no task using another.

    Lifetime: a key's lock lives while something refers to it (a task inside `async with`, or
    waiting to enter it) and goes with the last such task; the next use of the key makes a new one.
    The locks are held weakly, so keys used once and released leave nothing behind."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[K, asyncio.Lock] = weakref.WeakValueDictionary()

    def __call__(self, key: K) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    def __len__(self) -> int:
        """Keys whose lock is alive (held, waited for, or still referred to by a caller)."""
        return len(self._locks)


class Signal:
    """One listener's wake-up flag for one key of a `KeyedSignals` (from `listen()`).

    Lifetime: from entering `listen(key)` to leaving it; do not keep it past the `with` block.
    A wake that arrives while the listener is not waiting (checking its source, say) is kept, and the
    next `wait()` returns at once."""

    def __init__(self, owner: KeyedSignals[Any]) -> None:
        self._owner = owner
        self._event = asyncio.Event()

    def _set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait for a wake: True when `wake(key)` came (since this listener registered or since its
        last `wait()` returned), so check again; False when `timeout` seconds passed without one, or
        `wake_all()` closed the signals, so stop waiting. Each wake is consumed by the wait that
        returns it."""
        if not self._owner.closed and not self._event.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._event.wait()
        woken = self._event.is_set() and not self._owner.closed
        self._event.clear()
        return woken


class KeyedSignals(Generic[K]):
    """Per-key wake-ups for long-polls: a producer calls `wake(key)` after storing work for `key`;
    a consumer registers first, then checks for work, then waits, so that a wake between its check
    and its wait is not lost:

        with signals.listen(key) as signal:
            while (work := check()) is None:
                if not await signal.wait(remaining):
                    return None  # timed out, or shutting down
            return work

    Lifetime: a key's entry lives while at least one task is inside `listen(key)`, and is removed
    when the last one leaves; `wake()` for a key nobody listens on is a no-op that stores nothing.
    After `wake_all()` (shutdown) every current and later `wait()` returns False at once."""

    def __init__(self) -> None:
        self._listeners: dict[K, set[Signal]] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once `wake_all()` was called: waits no longer block."""
        return self._closed

    @contextlib.contextmanager
    def listen(self, key: K) -> Iterator[Signal]:
        """Register a listener on `key` for the `with` block; wakes from entry on are kept for it."""
        signal = Signal(self)
        listeners = self._listeners.setdefault(key, set())
        listeners.add(signal)
        try:
            yield signal
        finally:
            listeners.discard(signal)
            if not listeners and self._listeners.get(key) is listeners:
                del self._listeners[key]

    def wake(self, key: K) -> None:
        """Wake every listener on `key` (each one's next or current `wait()` returns True)."""
        for signal in self._listeners.get(key, ()):
            signal._set()

    async def wait(self, key: K, timeout: float | None = None) -> bool:
        """Listen on `key` and wait once: catches only wakes after the call. When work is checked
        before waiting, use `listen()` around both instead, or a wake in between is missed."""
        with self.listen(key) as signal:
            return await signal.wait(timeout)

    def wake_all(self) -> None:
        """Shutdown: release every waiter, and make later waits return False at once."""
        self._closed = True
        for listeners in self._listeners.values():
            for signal in listeners:
                signal._set()

    def __len__(self) -> int:
        """Keys with at least one listener."""
        return len(self._listeners)


class TaskSet:
    """Background tasks owned by one component: `spawn()` starts one, `close()` ends them all.

    Lifetime: a task is referred to (strongly, so the loop cannot lose it) from `spawn()` until it
    finishes, then dropped. A task that fails is logged once, with its traceback, when it ends (not as
    asyncio's "Task exception was never retrieved" at some later garbage collection); a cancelled one
    is not logged. `close()` cancels what is still running and waits for it; `spawn()` after
    `close()` raises RuntimeError."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        if self._closed:
            coro.close()  # never started: no "coroutine was never awaited" warning
            raise RuntimeError("TaskSet is closed: nothing more can be spawned")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # retrieved here, so asyncio does not report it again
        if exc is not None:
            log.error("background task failed", task=task.get_name(), exc_info=exc)

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the running tasks to finish on their own."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def close(self) -> None:
        """Cancel every running task and wait until all have ended (their failures are logged)."""
        self._closed = True
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def __len__(self) -> int:
        """Tasks still running."""
        return len(self._tasks)


class LogOnce(Generic[K]):
    """Report something once per key (an unknown channel, an unhandled event kind), not on every
    occurrence: `if seen.first(key): log.warning(...)`.

    Lifetime: the most recent `limit` keys (least recently seen evicted first), so an unbounded
    stream of distinct keys cannot grow it; a key evicted and seen again is reported once more."""

    def __init__(self, limit: int = 1024) -> None:
        if limit < 1:
            raise ValueError(f"LogOnce limit must be at least 1, not {limit}")
        self.limit = limit
        self._seen: OrderedDict[K, None] = OrderedDict()

    def first(self, key: K) -> bool:
        """True the first time `key` is seen (or first since it was evicted), False after that."""
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        if len(self._seen) > self.limit:
            self._seen.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._seen)
