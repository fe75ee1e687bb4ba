"""The gateway's Db (store functions in worker threads) on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from pynchy.gateway.db import Db
from pynchy.store import migrate, turns


def test_db_migrates_on_start_and_runs_calls_concurrently(empty_url: str) -> None:
    async def scenario() -> list[int]:
        db = Db(empty_url)  # migrates the empty database
        try:
            rows = await asyncio.gather(*(db.call(turns.enqueue, "team", "main", f"m{i}") for i in range(40)))
            claimed = await asyncio.gather(
                *(db.call(turns.claim_next, "team", "main", f"run-{i}", bound_only=False) for i in range(40))
            )
            assert sorted(r.id for r in claimed if r is not None) == sorted(r.id for r in rows)
            assert migrate.current(db.engine) == migrate.head()
            return [r.seq for r in rows]
        finally:
            db.close()

    seqs = asyncio.run(scenario())
    assert len(set(seqs)) == 40
