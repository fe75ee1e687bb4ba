"""Run store functions off the event loop, one transaction per call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from pynchy.store.db import make_engine, session_factory
from pynchy.store.migrate import create_schema

T = TypeVar("T")


class Db:
    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        create_schema(self.engine)
        self._sessions = session_factory(self.engine)
        # SQLite has one writer; a single thread also keeps transaction order equal to call order.
        threads = 1 if url.startswith("sqlite") else 8
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="store")

    def _tx(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self._sessions() as session:
            result = fn(session, *args, **kwargs)
            session.commit()
            return result

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(session, *args, **kwargs)` in a transaction; committed when it returns."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: self._tx(fn, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.engine.dispose()
