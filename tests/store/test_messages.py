"""Channel messages on SQLite and PostgreSQL: inbound dedupe by key (a replay is a duplicate, not an
error, even when both arrive at once), outbound records, the conversation view."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from pynchy.store import messages, turns
from pynchy.store.models import MessageRow, TurnRow
from store.helpers import blocked_or_done, run_threads

NS, GROUP = "team", "main"


def inbound(key: str, text: str = "hi", **kw: Any) -> dict[str, Any]:
    return {"dedupe_key": key, "channel": "slack", "channel_id": "C1", "text": text, **kw}


def count(session: Session, key: str | None = None) -> int:
    stmt = select(func.count()).select_from(MessageRow)
    if key is not None:
        stmt = stmt.where(MessageRow.dedupe_key == key)
    return session.scalar(stmt) or 0


def test_a_replayed_event_is_a_duplicate(tx: Callable[..., Any]) -> None:
    first, created = tx(messages.record_inbound, **inbound("slack:Ev1", sender="U1", thread="1.0", group=GROUP))
    assert created is True
    assert (first.direction, first.sender, first.thread, first.outcome) == ("in", "U1", "1.0", "")
    again, created = tx(messages.record_inbound, **inbound("slack:Ev1", text="replayed"))
    assert created is False
    assert (again.id, again.text) == (first.id, "hi")
    other, created = tx(messages.record_inbound, **inbound("local:c-1", channel="local"))
    assert created is True
    assert other.id != first.id
    assert tx(count) == 2


def test_outcome_and_outbound_records(tx: Callable[..., Any]) -> None:
    msg, _ = tx(
        messages.record_inbound, **inbound("slack:Ev1", namespace=NS, group=GROUP, outcome="queued", turn_id="turn-1")
    )
    assert (tx(messages.get, msg.id).outcome, tx(messages.get, msg.id).turn_id) == ("queued", "turn-1")

    # Outbound records carry no dedupe key: any number of them (NULLs do not collide).
    for text in ("one", "two"):
        tx(messages.record_outbound, channel="slack", channel_id="C1", text=text, namespace=NS, group=GROUP)
    convo = tx(messages.conversation, NS, GROUP)
    assert [(m.direction, m.text) for m in convo] == [("in", "hi"), ("out", "one"), ("out", "two")]
    assert [m.text for m in tx(messages.conversation, NS, GROUP, limit=2)] == ["one", "two"]


def test_the_same_event_arriving_at_once_is_stored_once(tx: Callable[..., Any]) -> None:
    results = run_threads(8, lambda i: tx(messages.record_inbound, **inbound("slack:EvSame", text=f"copy {i}")))
    assert [created for _, created in results].count(True) == 1
    assert len({row.id for row, _ in results}) == 1
    assert tx(count, "slack:EvSame") == 1


def test_a_duplicate_waits_for_the_first_and_keeps_the_rest_of_its_transaction(
    sessions: sessionmaker[Session], engine: Engine, tx: Callable[..., Any]
) -> None:
    """The second insert of a key meets the first one's uncommitted row (PostgreSQL: it waits on the
    unique index, then loses in its savepoint); its transaction's other work still commits."""
    got: list[tuple[MessageRow, bool]] = []

    def second(session: Session) -> None:
        turns.enqueue(session, NS, GROUP, "unrelated work in the same transaction", turn_id="t-other")
        got.append(messages.record_inbound(session, **inbound("slack:EvRace", text="second")))

    with sessions() as a:
        first, created = messages.record_inbound(a, **inbound("slack:EvRace", text="first"))
        assert created is True
        a.flush()  # the row (and its unique-index entry) exists, uncommitted
        other = threading.Thread(target=lambda: tx(second))
        other.start()
        blocked_or_done(engine, other)
        a.commit()
    other.join()
    row, created = got[0]
    assert (created, row.id, row.text) == (False, first.id, "first")
    assert tx(count, "slack:EvRace") == 1
    assert tx(lambda s: s.get(TurnRow, "t-other")) is not None
