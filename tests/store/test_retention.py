"""Retention on SQLite and PostgreSQL: old rows go in small batches, what must stay stays (unfinished
turns, ledger rows not final, the usage budgets read, the newest rows), a second pass deletes nothing;
and the gateway's pruner runs in the background and survives a failing pass."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from structlog.testing import capture_logs

from pynchy.aio import TaskSet
from pynchy.gateway.db import Db
from pynchy.gateway.pruner import Pruner
from pynchy.store import outbound, retention, turns
from pynchy.store.models import ApprovalRow, AuditRow, Base, MessageRow, OutboundRow, QuestionRow, TurnRow, UsageRow

NS = "team"
NOW = datetime(2026, 12, 15, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
POLICY = retention.RetentionPolicy(
    {"messages": 90, "turns": 90, "outbound": 30, "usage": 400, "audit": 365, "approvals": 90, "questions": 90},
    batch_size=2,
)


def message(text: str, at: datetime) -> MessageRow:
    return MessageRow(direction="in", channel="local", channel_id="c1", text=text, at=at, namespace=NS, group="a")


def turn(turn_id: str, seq: int, state: str, created: datetime, group: str = "a") -> TurnRow:
    finished = created + timedelta(minutes=1) if state in (turns.DONE, turns.FAILED) else None
    return TurnRow(
        id=turn_id, namespace=NS, group=group, prompt=turn_id, state=state, seq=seq, created_at=created,
        finished_at=finished,
    )  # fmt: skip


def ledger(key: str, state: str, created: datetime, turn_id: str | None = None) -> OutboundRow:
    return OutboundRow(
        key=key, namespace=NS, group="a", text=key, state=state, created_at=created, turn_id=turn_id,
        channel="local", channel_id="c1",
    )  # fmt: skip


def usage(run: str, at: datetime) -> UsageRow:
    return UsageRow(namespace=NS, group="a", run=run, source="proxy", at=at)


def audit(run: str, at: datetime) -> AuditRow:
    return AuditRow(namespace=NS, group="a", run=run, action="send_message", allowed=True, at=at)


def approval(approval_id: str, state: str, decided: datetime | None) -> ApprovalRow:
    return ApprovalRow(
        id=approval_id, key=approval_id, namespace=NS, group="a", run="r", run_uid="u", tool="Bash",
        args_digest="d", summary="ls", state=state, consumed=False, created_at=decided or NOW - 500 * DAY,
        expires_at=(decided or NOW) + DAY, decided_at=decided, reported=decided is not None,
    )  # fmt: skip


def question(question_id: str, state: str, closed: datetime | None) -> QuestionRow:
    return QuestionRow(
        id=question_id, key=question_id, namespace=NS, group="a", run="r", questions="[]", answers="[]",
        state=state, created_at=closed or NOW - 500 * DAY, expires_at=(closed or NOW) + DAY, answered_at=closed,
    )  # fmt: skip


def add(session: Session, rows: list[Base]) -> None:
    session.add_all(rows)


def names(session: Session) -> dict[str, list[str]]:
    """What is left of each table, by the text that names a row, in id (or seq) order."""
    return {
        "messages": list(session.scalars(select(MessageRow.text).order_by(MessageRow.id))),
        "turns": list(session.scalars(select(TurnRow.id).order_by(TurnRow.seq))),
        "outbound": list(session.scalars(select(OutboundRow.key).order_by(OutboundRow.id))),
        "usage": list(session.scalars(select(UsageRow.run).order_by(UsageRow.id))),
        "audit": list(session.scalars(select(AuditRow.run).order_by(AuditRow.id))),
        "approvals": list(session.scalars(select(ApprovalRow.id).order_by(ApprovalRow.id))),
        "questions": list(session.scalars(select(QuestionRow.id).order_by(QuestionRow.id))),
    }


class Passes:
    """`passes(policy, now)`: one pass of the gateway's pruner over the database, as the gateway runs
    it (Db.call per batch); `batches` holds (kind, rows) of every batch that deleted something."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self.batches: list[tuple[str, int]] = []

    def __call__(self, policy: retention.RetentionPolicy = POLICY, now: datetime = NOW) -> dict[str, int]:
        pruner = Pruner(self.db, policy, interval=60, on_pruned=lambda kind, n: self.batches.append((kind, n)))
        return asyncio.run(pruner.prune(now))


@pytest.fixture
def passes(store_url: str) -> Iterator[Passes]:
    db = Db(store_url)
    yield Passes(db)
    db.close()


def test_old_rows_go_in_small_batches_and_the_rest_stays(tx: Callable[..., Any], passes: Passes) -> None:
    old_msg, old_turn, old_ledger = NOW - 100 * DAY, NOW - 100 * DAY, NOW - 40 * DAY
    rows: list[Base] = [
        *(message(f"old-{i}", old_msg + i * timedelta(minutes=1)) for i in range(5)),
        message("new", NOW - DAY),
        # Group a: finished turns long ago, two never finished, one recent; group b: one old turn only.
        *(turn(f"a-done-{i}", 1 + i, turns.DONE if i % 2 else turns.FAILED, old_turn) for i in range(5)),
        turn("a-queued", 6, turns.QUEUED, NOW - 200 * DAY),
        turn("a-running", 7, turns.DELIVERED, NOW - 200 * DAY),
        turn("b-only", 8, turns.DONE, old_turn, group="b"),
        turn("a-recent", 9, turns.DONE, NOW - DAY),
        ledger("sent", outbound.SENT, old_ledger),
        ledger("failed", outbound.FAILED, old_ledger),
        ledger("stored", outbound.STORED, old_ledger),
        ledger("pending", outbound.PENDING, old_ledger),
        ledger("streaming", outbound.STREAMING, old_ledger),
        # Sent with its placeholder, but its turn is still running: the final text makes it pending.
        ledger("sent-of-running-turn", outbound.SENT, old_ledger, turn_id="a-running"),
        ledger("sent-of-done-turn", outbound.SENT, old_ledger, turn_id="a-done-0"),
        ledger("sent-recent", outbound.SENT, NOW - DAY),
        usage("usage-old", NOW - 500 * DAY),
        usage("usage-old-2", NOW - 401 * DAY),
        usage("usage-kept", NOW - 399 * DAY),
        audit("audit-old", NOW - 366 * DAY),
        audit("audit-kept", NOW - 364 * DAY),
        # Decided long ago: go; still pending (however old): stays; decided lately: stays.
        approval("apold", "denied", NOW - 91 * DAY),
        approval("append", "pending", None),
        approval("apnew", "approved", NOW - DAY),
        question("qold", "expired", NOW - 91 * DAY),
        question("qpend", "pending", None),
    ]
    tx(add, rows)

    counts = passes()
    assert counts == {
        "messages": 5, "turns": 5, "outbound": 4, "usage": 2, "audit": 1, "approvals": 1, "questions": 1
    }  # fmt: skip
    assert all(0 < n <= POLICY.batch_size for _kind, n in passes.batches), passes.batches
    assert tx(names) == {
        "messages": ["new"],
        "turns": ["a-queued", "a-running", "b-only", "a-recent"],
        "outbound": ["pending", "streaming", "sent-of-running-turn", "sent-recent"],
        "usage": ["usage-kept"],
        "audit": ["audit-kept"],
        "approvals": ["apnew", "append"],
        "questions": ["qpend"],
    }

    passes.batches.clear()
    assert passes() == dict.fromkeys(retention.KIND, 0)
    assert passes.batches == []


def test_usage_of_the_current_budget_months_stays_with_a_short_period(tx: Callable[..., Any], passes: Passes) -> None:
    # The previous month begins 1 November 00:00 UTC; 14 hours before that is the earliest any
    # zone's current or previous month begins.
    floor = datetime(2026, 10, 31, 10, 0, tzinfo=UTC)
    assert retention.usage_floor(NOW) == floor
    tx(
        add,
        [
            usage("before-the-floor", floor - timedelta(seconds=1)),
            usage("at-the-floor", floor),
            usage("november-1-utc", datetime(2026, 11, 1, tzinfo=UTC)),
            usage("this-month", NOW - 2 * DAY),
            usage("today", NOW - timedelta(hours=1)),
        ],
    )
    short = retention.RetentionPolicy({"usage": 1}, batch_size=2)
    assert passes(short)["usage"] == 1
    assert tx(names)["usage"] == ["at-the-floor", "november-1-utc", "this-month", "today"]


def test_the_newest_rows_stay_so_ids_and_seq_never_go_back(tx: Callable[..., Any], passes: Passes) -> None:
    """Everything is old: the newest row of each table stays, so SQLite (max(id) + 1) never hands an
    id out again (a local channel's cursor would skip the new row), and the newest turn of each Group
    stays (its last activity; enqueue's max(seq) + 1)."""
    old = NOW - 1000 * DAY
    tx(
        add,
        [
            *(message(f"m{i}", old) for i in range(3)),
            *(ledger(f"o{i}", outbound.SENT, old) for i in range(3)),
            *(usage(f"u{i}", old) for i in range(3)),
            *(audit(f"a{i}", old) for i in range(3)),
            *(turn(f"t{i}", i + 1, turns.DONE, old) for i in range(3)),
            turn("b-last", 10, turns.DONE, old, group="b"),
        ],
    )
    cursor = tx(lambda s: s.scalar(select(func.max(OutboundRow.id))))
    assert passes() == {
        "messages": 2,
        "turns": 2,
        "outbound": 2,
        "usage": 2,
        "audit": 2,
        "approvals": 0,
        "questions": 0,
    }
    assert tx(names) == {
        "messages": ["m2"],
        "turns": ["t2", "b-last"],
        "outbound": ["o2"],
        "usage": ["u2"],
        "audit": ["a2"],
        "approvals": [],
        "questions": [],
    }
    row, _ = tx(outbound.add, key="after", namespace=NS, group="a", text="new", channel="local", channel_id="c1")
    assert row.id > cursor
    assert [r.key for r in tx(outbound.for_channel, "local", "c1", cursor)] == ["after"]
    assert tx(turns.enqueue, NS, "a", "next").seq == 11


def test_a_batch_deletes_at_most_its_limit_and_zero_keeps_forever(tx: Callable[..., Any], passes: Passes) -> None:
    tx(add, [audit(f"a{i}", NOW - 1000 * DAY) for i in range(6)])
    assert tx(retention.prune_batch, "audit", NOW, 2) == 2
    assert tx(retention.prune_batch, "audit", NOW, 10) == 3  # the newest stays
    assert tx(retention.prune_batch, "audit", NOW, 10) == 0

    tx(add, [message(f"m{i}", NOW - 1000 * DAY) for i in range(3)] + [message("new", NOW)])
    forever = retention.RetentionPolicy(dict.fromkeys(retention.KIND, 0))
    assert passes(forever) == {}
    assert len(tx(names)["messages"]) == 4


@pytest.mark.parametrize("db_kind", ["sqlite"])  # PostgreSQL's planner goes by statistics, not by rules
def test_a_batch_reads_the_time_index_on_sqlite(tx: Callable[..., Any]) -> None:
    """SQLite has no statistics: its planner must still take each kind's batch off the index on its
    time column (a pass with nothing due reads almost nothing), not scan a table or another index."""
    indexes = {
        "messages": "ix_messages_at",
        "turns": "ix_turns_finished_at",
        "outbound": "ix_outbound_state_created_at",
        "usage": "ix_usage_at",
        "audit": "ix_audit_at",
        "approvals": "ix_approvals_decided_at",
        "questions": "ix_questions_answered_at",
    }
    assert set(indexes) == set(retention.KIND)
    tx(add, [message("m", NOW), ledger("o", outbound.SENT, NOW), usage("u", NOW), audit("a", NOW)])

    def plan(session: Session, kind: str) -> str:
        query, _ = retention.batch_select(session, kind, NOW, 10)
        sql = query.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
        return " / ".join(row[3] for row in session.execute(text(f"EXPLAIN QUERY PLAN {sql}")))

    for kind, index in indexes.items():
        steps = tx(plan, kind)
        first = steps.split(" / ")[0]
        assert first.startswith(f"SEARCH {kind} USING "), steps
        assert f"INDEX {index} (" in first, steps
        assert "SCAN" not in steps, steps
        assert "TEMP B-TREE" not in steps, steps


async def eventually(predicate: Callable[[], Awaitable[bool]], what: str, limit: float = 30.0) -> None:
    """Poll until `predicate()` holds; the limit only turns a hang into an error that names it."""
    deadline = time.monotonic() + limit
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.01)


def test_the_background_pruner_runs_and_survives_a_failing_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = retention.prune_batch
    calls = {"n": 0}

    def flaky(session: Session, kind: str, cutoff: datetime, limit: int) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("DELETE ...", {}, Exception("database is locked"))
        return real(session, kind, cutoff, limit)

    monkeypatch.setattr(retention, "prune_batch", flaky)

    async def scenario() -> list[dict[str, Any]]:
        db = Db(f"sqlite:///{tmp_path}/gateway.db")
        tasks = TaskSet()
        now = datetime.now(UTC)
        try:
            await db.call(add, [message(f"old-{i}", now - 400 * DAY) for i in range(5)] + [message("new", now)])
            with capture_logs() as logs:
                tasks.spawn(Pruner(db, POLICY, interval=0.02).run(), name="store-retention")

                async def pruned_and_told() -> bool:
                    told = any(e["event"] == "store pruned" and e.get("messages") == 5 for e in logs)
                    return told and await db.call(lambda s: names(s)["messages"]) == ["new"]

                await eventually(pruned_and_told, "the old messages are pruned and the pass logged")
            assert len(tasks) == 1  # still running after the failed pass
            return logs
        finally:
            await tasks.close()
            db.close()

    logs = asyncio.run(scenario())
    failed = [e for e in logs if e["event"].startswith("store retention pass failed")]
    assert len(failed) == 1
    assert failed[0]["log_level"] == "error"
