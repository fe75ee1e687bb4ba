"""Concurrency helpers for the store tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Engine, text

T = TypeVar("T")


def wait_until(predicate: Callable[[], bool], what: str, limit: float = 120.0) -> None:
    """Poll until `predicate()` holds. The limit only turns a hang into an error that names it."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.01)


def pg_waiters(engine: Engine, wait_event: str | None = None) -> int:
    """Backends of this database waiting for a lock (a row lock: 'transactionid'/'tuple'; 'advisory')."""
    sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    with engine.connect() as conn:
        if wait_event is None:
            return conn.execute(text(sql)).scalar_one()
        return conn.execute(text(sql + " AND wait_event = :e"), {"e": wait_event}).scalar_one()


def blocked_or_done(engine: Engine, thread: threading.Thread, wait_event: str | None = None) -> None:
    """Wait until `thread` finished or (PostgreSQL) is blocked on a lock. On SQLite a writer waits
    inside its BEGIN IMMEDIATE where nothing shows it; there this returns at once: any interleaving
    must give the same result, the PostgreSQL case pins down the interesting one."""
    if engine.dialect.name != "postgresql":
        return
    wait_until(lambda: not thread.is_alive() or pg_waiters(engine, wait_event) > 0, "the other transaction blocks")


def run_threads(n: int, fn: Callable[[int], T]) -> list[T]:
    """fn(0..n-1) in n threads released together; results in order, the first exception re-raised."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait()
            results[i] = fn(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back the UTC wall time without a zone; PostgreSQL an aware datetime in the server's zone."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
