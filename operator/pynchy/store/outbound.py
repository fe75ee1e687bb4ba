"""The outbound ledger: a reply is written here before it is sent, and marked once it is.

A crash between sending and marking leaves the row pending; the channel reconciles it on start-up
(Slack finds the posted message by the key it carries in its metadata), so nothing is lost and
nothing shows twice."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pynchy.store import messages
from pynchy.store.models import OutboundRow, TurnRow

PENDING, SENT, FAILED, STORED = "pending", "sent", "failed", "stored"
# A streamed reply's placeholder: posted, waiting for its final text (set_text makes it pending).
STREAMING = "streaming"
MAX_ATTEMPTS = 8


def add(
    session: Session,
    *,
    key: str,
    namespace: str,
    group: str,
    text: str,
    channel: str | None = None,
    channel_id: str | None = None,
    thread: str | None = None,
    turn_id: str | None = None,
    is_error: bool = False,
    streaming: bool = False,
    blocks: str | None = None,
) -> tuple[OutboundRow, bool]:
    """Put a message in the ledger once per `key`. Returns (row, created). A message with no
    channel is kept as `stored` (nobody to deliver to, but the record stays)."""
    existing = by_key(session, key)
    if existing is not None:
        return existing, False
    row = OutboundRow(
        key=key,
        namespace=namespace,
        group=group,
        text=text,
        channel=channel,
        channel_id=channel_id,
        thread=thread,
        turn_id=turn_id,
        is_error=is_error,
        blocks=blocks,
        state=(STREAMING if streaming else PENDING) if channel else STORED,
        created_at=datetime.now(UTC),
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        winner = by_key(session, key)
        if winner is None:
            raise
        return winner, False
    return row, True


def by_key(session: Session, key: str) -> OutboundRow | None:
    return session.scalar(select(OutboundRow).where(OutboundRow.key == key))


def get(session: Session, row_id: int) -> OutboundRow | None:
    return session.get(OutboundRow, row_id)


def pending(session: Session, channel: str | None = None, limit: int = 100) -> list[OutboundRow]:
    """Rows still to send, oldest first (replies keep their order); optionally of one channel kind."""
    stmt = select(OutboundRow).where(OutboundRow.state == PENDING)
    if channel is not None:
        stmt = stmt.where(OutboundRow.channel == channel)
    return list(session.scalars(stmt.order_by(OutboundRow.id).limit(limit)))


def set_external_id(session: Session, row_id: int, external_id: str) -> None:
    """A placeholder (or the message itself) was posted; remember where, before the final text."""
    row = session.get(OutboundRow, row_id)
    if row is not None and row.external_id is None:
        row.external_id = external_id


def set_text(session: Session, key: str, text: str, is_error: bool = False) -> OutboundRow | None:
    """Final text for a row created ahead of it (a streamed reply's placeholder); sent again if it
    had been marked sent with the placeholder only."""
    row = by_key(session, key)
    if row is None:
        return None
    if row.text != text or row.is_error != is_error:
        row.text = text
        row.is_error = is_error
    if row.channel and row.state in (SENT, STREAMING):
        row.state = PENDING
    return row


def restate(session: Session, key: str, text: str, blocks: str | None) -> OutboundRow | None:
    """New text and layout for a message already in the ledger (an approval's outcome replaces its
    buttons): sent again, as an update in place once the channel has it (external_id)."""
    row = by_key(session, key)
    if row is None:
        return None
    row.text = text
    row.blocks = blocks
    if row.channel and row.state in (SENT, FAILED):
        row.state = PENDING
        row.attempts = 0
    return row


def reply_key(turn_id: str, part: int = 0) -> str:
    """The ledger key of a turn's reply part (part 0 is what a streamed placeholder becomes)."""
    return f"turn:{turn_id}:{part}"


def add_reply(session: Session, turn: TurnRow, parts: list[str], *, is_error: bool = False) -> list[OutboundRow]:
    """A turn's reply, split into `parts`, in the ledger: part 0 finishes a streamed placeholder if
    one was posted; the rest are new messages. Idempotent (a retried result writes nothing new)."""
    rows: list[OutboundRow] = []
    for index, text in enumerate(parts):
        key = reply_key(turn.id, index)
        row = set_text(session, key, text, is_error) if index == 0 else None
        if row is None:
            row, _ = add(
                session,
                key=key,
                namespace=turn.namespace,
                group=turn.group,
                text=text,
                channel=turn.reply_channel,
                channel_id=turn.reply_channel_id,
                thread=turn.reply_thread,
                turn_id=turn.id,
                is_error=is_error,
            )
        rows.append(row)
    return rows


def mark_sent(session: Session, row_id: int, external_id: str | None) -> OutboundRow | None:
    row = session.get(OutboundRow, row_id)
    if row is None or row.state == SENT:
        return row
    row.state = SENT
    row.external_id = external_id or row.external_id
    row.sent_at = datetime.now(UTC)
    row.attempts += 1
    if row.channel and row.channel_id:
        messages.record_outbound(
            session,
            channel=row.channel,
            channel_id=row.channel_id,
            thread=row.thread,
            external_id=row.external_id,
            text=row.text,
            namespace=row.namespace,
            group=row.group,
            turn_id=row.turn_id,
        )
    return row


def mark_attempt_failed(session: Session, row_id: int, error: str, *, permanent: bool = False) -> OutboundRow | None:
    """A send failed: try again later, or give up after MAX_ATTEMPTS (or at once when permanent)."""
    row = session.get(OutboundRow, row_id)
    if row is None or row.state != PENDING:
        return row
    row.attempts += 1
    row.last_error = error[:2000]
    if permanent or row.attempts >= MAX_ATTEMPTS:
        row.state = FAILED
    return row


def for_group(session: Session, namespace: str, group: str, after_id: int = 0, limit: int = 500) -> list[OutboundRow]:
    """Everything the Group's agent sent or replied, in order."""
    return _after(session, (OutboundRow.namespace == namespace, OutboundRow.group == group), after_id, limit)


def for_channel(
    session: Session, channel: str, channel_id: str, after_id: int = 0, limit: int = 500
) -> list[OutboundRow]:
    """A channel's messages after a cursor (the local channel reads its replies this way)."""
    return _after(session, (OutboundRow.channel == channel, OutboundRow.channel_id == channel_id), after_id, limit)


def _after(session: Session, where: tuple[Any, ...], after_id: int, limit: int) -> list[OutboundRow]:
    stmt = select(OutboundRow).where(*where, OutboundRow.id > after_id).order_by(OutboundRow.id).limit(limit)
    return list(session.scalars(stmt))


def latest_id(session: Session, channel: str, channel_id: str) -> int:
    """Id of a channel's newest message, 0 when it has none (a cursor that shows nothing older)."""
    stmt = select(func.max(OutboundRow.id)).where(OutboundRow.channel == channel, OutboundRow.channel_id == channel_id)
    return session.scalar(stmt) or 0
