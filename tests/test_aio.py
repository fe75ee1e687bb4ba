"""The asyncio primitives of pynchy.aio: behaviour, and that what they hold is released.

Nothing here sleeps and then asserts that nothing happened: a task that must be blocked is shown
blocked by the state it waits in (it runs until it suspends before the test resumes), and waits use
a timeout of 0 where "no wake is pending" is the point."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from structlog.testing import capture_logs

from pynchy.aio import KeyedLocks, KeyedSignals, LogOnce, TaskSet

GUARD = 5.0  # seconds: only reached when a test is about to fail


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


# -- KeyedLocks ------------------------------------------------------------------------


def test_one_key_excludes_a_second_task_until_the_first_leaves() -> None:
    async def main() -> None:
        locks: KeyedLocks[str] = KeyedLocks()
        trace: list[str] = []
        a_in = asyncio.Event()
        release = asyncio.Event()
        b_trying = asyncio.Event()

        async def first() -> None:
            async with locks("k"):
                trace.append("a in")
                a_in.set()
                await release.wait()
                trace.append("a out")

        async def second() -> None:
            b_trying.set()
            async with locks("k"):  # suspends here, before the test resumes from b_trying.wait()
                trace.append("b in")

        a = asyncio.create_task(first())
        await a_in.wait()
        b = asyncio.create_task(second())
        await b_trying.wait()
        assert locks("k").locked()
        assert trace == ["a in"]
        assert len(locks) == 1  # one lock for the holder and the waiter
        release.set()
        await asyncio.wait_for(asyncio.gather(a, b), GUARD)
        assert trace == ["a in", "a out", "b in"]

    run(main)


def test_other_keys_do_not_wait_for_a_held_one() -> None:
    async def main() -> None:
        locks: KeyedLocks[str] = KeyedLocks()
        held = asyncio.Event()
        release = asyncio.Event()

        async def hold() -> None:
            async with locks("a"):
                held.set()
                await release.wait()

        holder = asyncio.create_task(hold())
        await held.wait()

        async def other() -> str:
            async with locks("b"):
                return "b done"

        assert await asyncio.wait_for(other(), GUARD) == "b done"
        assert locks("a").locked()
        release.set()
        await holder

    run(main)


def test_locks_of_released_keys_are_dropped() -> None:
    async def main() -> None:
        locks: KeyedLocks[tuple[str, int]] = KeyedLocks()
        for i in range(1000):
            async with locks(("ns", i)):
                pass
        assert len(locks) == 0

        # Contended keys too: the lock goes with the last of the tasks that waited for it.
        async def use(key: tuple[str, int]) -> None:
            async with locks(key):
                await asyncio.sleep(0)

        await asyncio.gather(*(use(("ns", i % 10)) for i in range(200)))
        assert len(locks) == 0

    run(main)


def test_a_lock_stays_the_same_while_it_is_held() -> None:
    async def main() -> None:
        locks: KeyedLocks[str] = KeyedLocks()
        async with locks("k"):
            assert locks("k") is locks("k")
            assert locks("k").locked()
        assert not locks("k").locked()

    run(main)


# -- KeyedSignals ----------------------------------------------------------------------


async def long_poll(signals: KeyedSignals[str], key: str, check: Callable[[], Any], wait: float) -> Any:
    """The consumer's side, as a long-poll writes it: register, check, wait, check again."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    with signals.listen(key) as signal:
        while True:
            found = await check()
            if found is not None:
                return found
            if not await signal.wait(deadline - loop.time()):
                return None


def test_a_wake_between_the_check_and_the_wait_is_not_lost() -> None:
    async def main() -> None:
        signals: KeyedSignals[str] = KeyedSignals()
        queue: list[str] = []
        checks = 0

        async def check() -> str | None:
            nonlocal checks
            checks += 1
            found = queue.pop() if queue else None
            if checks == 1:  # the producer enqueues just after this check looked, and wakes
                queue.append("turn")
                signals.wake("g")
            return found

        # A minute of wait: missing the wake would time the test out at GUARD.
        found = await asyncio.wait_for(long_poll(signals, "g", check, 60), GUARD)
        assert found == "turn"
        assert checks == 2
        assert len(signals) == 0

    run(main)


def test_a_wake_before_the_wait_returns_at_once_and_is_consumed() -> None:
    async def main() -> None:
        signals: KeyedSignals[str] = KeyedSignals()
        with signals.listen("k") as signal:
            signals.wake("k")
            assert await signal.wait(0) is True
            assert await signal.wait(0) is False  # consumed by the wait that returned it
            signals.wake("other")
            assert await signal.wait(0) is False
        signals.wake("k")  # nobody listens: stores nothing
        assert len(signals) == 0

    run(main)


def test_a_wake_releases_every_listener_of_its_key() -> None:
    async def main() -> None:
        signals: KeyedSignals[str] = KeyedSignals()
        registered = [asyncio.Event() for _ in range(3)]

        async def waiter(ready: asyncio.Event) -> bool:
            with signals.listen("k") as signal:
                ready.set()
                return await signal.wait(None)

        tasks = [asyncio.create_task(waiter(r)) for r in registered]
        for r in registered:
            await r.wait()
        assert len(signals) == 1
        signals.wake("k")
        assert await asyncio.wait_for(asyncio.gather(*tasks), GUARD) == [True, True, True]
        assert len(signals) == 0

    run(main)


def test_a_wait_without_a_wake_times_out_false() -> None:
    async def main() -> None:
        signals: KeyedSignals[str] = KeyedSignals()
        assert await signals.wait("k", 0.01) is False
        with signals.listen("k") as signal:
            assert await signal.wait(-1) is False
        assert len(signals) == 0

    run(main)


def test_signal_entries_go_with_their_last_listener() -> None:
    async def main() -> None:
        signals: KeyedSignals[tuple[str, str]] = KeyedSignals()
        for i in range(1000):
            key = ("ns", f"group-{i}")
            with signals.listen(key) as a, signals.listen(key) as b:
                signals.wake(key)
                assert await a.wait(0)
                assert await b.wait(0)
            signals.wake(key)
        assert len(signals) == 0

        # Listeners leaving by an exception, or by cancellation, are removed as well.
        with pytest.raises(RuntimeError), signals.listen(("ns", "x")):
            raise RuntimeError("boom")
        registered = asyncio.Event()

        async def waiter() -> None:
            with signals.listen(("ns", "y")) as signal:
                registered.set()
                await signal.wait(None)

        task = asyncio.create_task(waiter())
        await registered.wait()
        assert len(signals) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(signals) == 0

    run(main)


def test_wake_all_releases_waiters_and_later_waits_return_at_once() -> None:
    async def main() -> None:
        signals: KeyedSignals[str] = KeyedSignals()
        registered = [asyncio.Event() for _ in range(3)]

        async def waiter(key: str, ready: asyncio.Event) -> bool:
            with signals.listen(key) as signal:
                ready.set()
                return await signal.wait(None)  # no timeout: only wake_all ends it

        tasks = [asyncio.create_task(waiter(f"k{i}", r)) for i, r in enumerate(registered)]
        for r in registered:
            await r.wait()
        signals.wake_all()
        assert signals.closed
        assert await asyncio.wait_for(asyncio.gather(*tasks), GUARD) == [False, False, False]
        assert await asyncio.wait_for(signals.wait("later", None), GUARD) is False
        # A long-poll ends instead of spinning: its wait says "stop".
        assert await asyncio.wait_for(long_poll(signals, "k0", _nothing, 60), GUARD) is None
        assert len(signals) == 0

    run(main)


async def _nothing() -> None:
    return None


# -- TaskSet ---------------------------------------------------------------------------


def test_a_failed_task_is_logged_once_and_not_reported_by_asyncio() -> None:
    async def main() -> None:
        asyncio_reports: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: asyncio_reports.append(ctx))
        tasks = TaskSet()

        async def fail() -> None:
            raise ValueError("broken")

        with capture_logs() as logs:
            task = tasks.spawn(fail(), name="failing-job")
            await asyncio.wait([task])  # TaskSet's done callback was registered first, so it has run
            assert len(tasks) == 0
            await tasks.close()
        del task
        gc.collect()  # a failed task nobody asked is reported when it is collected
        failures = [e for e in logs if e["event"] == "background task failed"]
        assert len(failures) == 1
        assert failures[0]["log_level"] == "error"
        assert failures[0]["task"] == "failing-job"
        assert isinstance(failures[0]["exc_info"], ValueError)
        assert asyncio_reports == []

    run(main)


def test_finished_tasks_are_dropped_and_cancelled_ones_not_logged() -> None:
    async def main() -> None:
        tasks = TaskSet()

        async def answer() -> int:
            return 42

        async def forever() -> None:
            await asyncio.Event().wait()

        with capture_logs() as logs:
            done = tasks.spawn(answer())
            assert await done == 42
            pending = tasks.spawn(forever())
            pending.cancel()
            await asyncio.wait([pending])
        assert len(tasks) == 0
        assert logs == []

    run(main)


def test_close_cancels_running_tasks_and_waits_for_them() -> None:
    async def main() -> None:
        tasks = TaskSet()
        started = [asyncio.Event() for _ in range(3)]
        cleaned: list[int] = []

        async def job(i: int) -> None:
            try:
                started[i].set()
                await asyncio.Event().wait()
            finally:
                await asyncio.sleep(0)  # cleanup that awaits: close() waits for it
                cleaned.append(i)

        spawned = [tasks.spawn(job(i), name=f"job-{i}") for i in range(3)]
        for s in started:
            await s.wait()
        assert len(tasks) == 3
        await asyncio.wait_for(tasks.close(), GUARD)
        assert all(t.cancelled() for t in spawned)
        assert sorted(cleaned) == [0, 1, 2]
        assert len(tasks) == 0

        never = _nothing()
        with pytest.raises(RuntimeError, match="closed"):
            tasks.spawn(never)

    run(main)


# -- LogOnce ---------------------------------------------------------------------------


def test_log_once_is_true_only_the_first_time() -> None:
    seen: LogOnce[tuple[str, str]] = LogOnce()
    assert seen.first(("slack", "C1"))
    assert not seen.first(("slack", "C1"))
    assert seen.first(("slack", "C2"))
    assert not seen.first(("slack", "C1"))


def test_log_once_keeps_at_most_its_limit_of_keys() -> None:
    seen: LogOnce[int] = LogOnce(limit=100)
    for i in range(10_000):
        assert seen.first(i)
    assert len(seen) == 100
    assert not seen.first(9_999)
    assert seen.first(0)  # evicted long ago: reported once more

    # Seeing a key again keeps it: the least recently seen key goes first.
    small: LogOnce[str] = LogOnce(limit=2)
    small.first("a")
    small.first("b")
    small.first("a")
    small.first("c")  # evicts "b", not "a"
    assert not small.first("a")
    assert small.first("b")

    assert LogOnce().limit == 1024
    with pytest.raises(ValueError, match="at least 1"):
        LogOnce(limit=0)
