"""Channel messages: inbound with dedupe by key, outbound recorded when delivered."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from pynchy.store.models import MessageRow, table_of

IN, OUT = "in", "out"


def record_inbound(
    session: Session,
    *,
    dedupe_key: str,
    channel: str,
    channel_id: str,
    text: str,
    sender: str | None = None,
    thread: str | None = None,
    external_id: str | None = None,
    namespace: str | None = None,
    group: str | None = None,
    outcome: str = "",
    turn_id: str | None = None,
) -> tuple[MessageRow, bool]:
    """Store an inbound message once per `dedupe_key`. Returns (row, created); created is False
    for a replay, and the row is the one stored the first time.

    One INSERT … ON CONFLICT DO NOTHING: the database decides, so two processes receiving the same
    event at once store it once, and the common case costs one statement."""
    values = {
        "direction": IN,
        "channel": channel,
        "channel_id": channel_id,
        "thread": thread,
        "external_id": external_id,
        "dedupe_key": dedupe_key,
        "namespace": namespace,
        "group": group,
        "sender": sender,
        "text": text,
        "outcome": outcome,
        "turn_id": turn_id,
        "at": datetime.now(UTC),
    }
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    table = table_of(MessageRow)  # Core, not the ORM's bulk insert path: this runs for every message
    stmt = insert(table).values(**values).on_conflict_do_nothing(index_elements=["dedupe_key"])
    new_id = session.execute(stmt.returning(table.c.id)).scalar()
    if new_id is None:
        existing = session.scalar(select(MessageRow).where(MessageRow.dedupe_key == dedupe_key))
        assert existing is not None  # the conflicting row is committed (or we would have waited on it)
        return existing, False
    row = MessageRow(id=new_id, **values)
    return row, True


def record_outbound(
    session: Session,
    *,
    channel: str,
    channel_id: str,
    text: str,
    namespace: str,
    group: str,
    thread: str | None = None,
    external_id: str | None = None,
    turn_id: str | None = None,
) -> MessageRow:
    row = MessageRow(
        direction=OUT,
        channel=channel,
        channel_id=channel_id,
        thread=thread,
        external_id=external_id,
        namespace=namespace,
        group=group,
        sender="agent",
        text=text,
        outcome="sent",
        turn_id=turn_id,
        at=datetime.now(UTC),
    )
    session.add(row)
    session.flush()
    return row


def get(session: Session, message_id: int) -> MessageRow | None:
    return session.get(MessageRow, message_id)


def conversation(session: Session, namespace: str, group: str, limit: int = 100) -> list[MessageRow]:
    """The Group's latest messages, both directions, oldest first."""
    rows = session.scalars(
        select(MessageRow)
        .where(MessageRow.namespace == namespace, MessageRow.group == group)
        .order_by(MessageRow.id.desc())
        .limit(limit)
    ).all()
    return list(reversed(rows))
