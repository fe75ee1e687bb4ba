"""The outbound ledger on SQLite and PostgreSQL: idempotency keys, delivery states, reply parts."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from pynchy.store import messages, outbound, turns
from pynchy.store.models import OutboundRow
from store.helpers import as_utc, blocked_or_done, run_threads

NS, GROUP = "team", "main"
SLACK = {"channel": "slack", "channel_id": "C1", "thread": "1.0"}


def add(tx: Callable[..., Any], key: str, text: str = "hello", **kw: Any) -> tuple[OutboundRow, bool]:
    return tx(outbound.add, key=key, namespace=NS, group=GROUP, text=text, **kw)


def rows_with_key(session: Session, key: str) -> int:
    return session.scalar(select(func.count()).select_from(OutboundRow).where(OutboundRow.key == key)) or 0


def test_a_key_is_in_the_ledger_once(tx: Callable[..., Any]) -> None:
    row, created = add(tx, "send:1", **SLACK)
    assert (created, row.state, row.attempts, row.is_error) == (True, "pending", 0, False)
    again, created = add(tx, "send:1", text="different", **SLACK)
    assert (created, again.id, again.text) == (False, row.id, "hello")
    assert tx(rows_with_key, "send:1") == 1


def test_without_a_channel_a_message_is_only_stored(tx: Callable[..., Any]) -> None:
    row, _ = add(tx, "send:2")
    assert row.state == "stored"
    assert tx(outbound.pending) == []


def test_delivery_states(tx: Callable[..., Any]) -> None:
    first, _ = add(tx, "send:a", text="a", **SLACK)
    second, _ = add(tx, "send:b", text="b", **SLACK)
    local, _ = add(tx, "send:c", text="c", channel="local", channel_id="me")
    assert [r.id for r in tx(outbound.pending)] == [first.id, second.id, local.id]
    assert [r.id for r in tx(outbound.pending, "local")] == [local.id]

    before = datetime.now(UTC)
    sent = tx(outbound.mark_sent, first.id, "1700000000.000100")
    assert (sent.state, sent.external_id, sent.attempts) == ("sent", "1700000000.000100", 1)
    assert before <= as_utc(tx(outbound.get, first.id).sent_at) <= datetime.now(UTC)
    # Sent once is sent: marking again changes nothing and records no second message.
    assert tx(outbound.mark_sent, first.id, "other").external_id == "1700000000.000100"
    out = [m for m in tx(messages.conversation, NS, GROUP) if m.direction == "out"]
    assert [(m.text, m.external_id, m.thread) for m in out] == [("a", "1700000000.000100", "1.0")]

    failed = tx(outbound.mark_attempt_failed, second.id, "x" * 5000)
    assert (failed.state, failed.attempts, len(failed.last_error)) == ("pending", 1, 2000)
    for _ in range(outbound.MAX_ATTEMPTS - 1):
        tx(outbound.mark_attempt_failed, second.id, "rate limited")
    assert (tx(outbound.get, second.id).state, tx(outbound.get, second.id).attempts) == ("failed", 8)
    # Only pending rows count attempts.
    assert tx(outbound.mark_attempt_failed, second.id, "again").attempts == outbound.MAX_ATTEMPTS
    assert tx(outbound.mark_attempt_failed, local.id, "channel_not_found", permanent=True).state == "failed"
    assert tx(outbound.pending) == []


def test_a_streamed_placeholder_waits_for_its_text(tx: Callable[..., Any]) -> None:
    row, _ = add(tx, "turn:t1:0", text="…", streaming=True, **SLACK)
    assert row.state == "streaming"
    assert tx(outbound.pending) == []
    tx(outbound.set_external_id, row.id, "111.1")
    tx(outbound.set_external_id, row.id, "222.2")  # the first post is where it lives
    assert tx(outbound.get, row.id).external_id == "111.1"
    final = tx(outbound.set_text, "turn:t1:0", "the answer")
    assert (final.state, final.text, final.external_id) == ("pending", "the answer", "111.1")
    tx(outbound.mark_sent, row.id, None)
    assert tx(outbound.get, row.id).external_id == "111.1"
    # A corrected text for a sent message is sent again (an edit).
    assert tx(outbound.set_text, "turn:t1:0", "the corrected answer").state == "pending"
    assert tx(outbound.set_text, "turn:unknown:0", "x") is None


def test_a_reply_in_parts_is_written_once(tx: Callable[..., Any]) -> None:
    turn = tx(
        turns.enqueue, NS, GROUP, "q", turn_id="t-9", reply_channel="slack", reply_channel_id="C1", reply_thread="1.0"
    )
    rows = tx(outbound.add_reply, turn, ["part one", "part two"])
    assert [(r.key, r.text, r.state, r.thread) for r in rows] == [
        ("turn:t-9:0", "part one", "pending", "1.0"),
        ("turn:t-9:1", "part two", "pending", "1.0"),
    ]
    again = tx(outbound.add_reply, turn, ["part one", "part two"])  # a retried result
    assert [r.id for r in again] == [r.id for r in rows]
    assert len(tx(outbound.for_group, NS, GROUP)) == 2
    assert [r.id for r in tx(outbound.for_channel, "slack", "C1", after_id=rows[0].id)] == [rows[1].id]
    assert tx(outbound.for_channel, "slack", "C2") == []


def test_the_same_key_added_at_once_is_one_row(tx: Callable[..., Any]) -> None:
    results = run_threads(8, lambda i: add(tx, "send:same", text=f"copy {i}", **SLACK))
    assert [created for _, created in results].count(True) == 1
    assert len({row.id for row, _ in results}) == 1
    assert tx(rows_with_key, "send:same") == 1


def test_a_retried_reply_at_once_writes_each_part_once(tx: Callable[..., Any]) -> None:
    turn = tx(turns.enqueue, NS, GROUP, "q", reply_channel="slack", reply_channel_id="C1")
    run_threads(6, lambda i: tx(outbound.add_reply, turn, ["one", "two", "three"]))
    assert [r.key for r in tx(outbound.for_group, NS, GROUP)] == [f"turn:{turn.id}:{i}" for i in range(3)]


def test_a_second_add_waits_for_the_first_and_reports_a_duplicate(
    sessions: sessionmaker[Session], engine: Engine, tx: Callable[..., Any]
) -> None:
    got: list[tuple[OutboundRow, bool]] = []
    with sessions() as a:
        first, created = outbound.add(a, key="cmd:slack:Ev1", namespace=NS, group=GROUP, text="first", **SLACK)
        assert created is True
        a.flush()
        other = threading.Thread(target=lambda: got.append(add(tx, "cmd:slack:Ev1", text="second", **SLACK)))
        other.start()
        blocked_or_done(engine, other)
        a.commit()
    other.join()
    row, created = got[0]
    assert (created, row.id, row.text) == (False, first.id, "first")
    assert tx(rows_with_key, "cmd:slack:Ev1") == 1
