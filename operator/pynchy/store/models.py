"""Tables of the conversation store. SQLite by default, PostgreSQL by URL; nothing vendor-specific."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Boolean, DateTime, Dialect, Float, Index, Integer, String, Table, Text, UniqueConstraint, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that always comes back aware, in UTC: SQLite keeps no zone (the store writes UTC),
    PostgreSQL answers in the server's zone. Callers compare times without caring which."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


def table_of(model: type[Base]) -> Table:
    """The Core Table a mapped class is declared on, for Core statements (inserts, upserts)."""
    table = model.__table__
    assert isinstance(table, Table)  # declarative classes map one Table (the type says FromClause)
    return table


class TurnRow(Base):
    """One message for an agent to answer, from queueing to its reply."""

    __tablename__ = "turns"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    namespace: Mapped[str] = mapped_column(String(63))
    group: Mapped[str] = mapped_column(String(63))
    # Set for turns that belong to one run only (a schedule's or a manual run's prompt).
    run: Mapped[str | None] = mapped_column(String(253), default=None)
    prompt: Mapped[str] = mapped_column(Text)
    sender: Mapped[str | None] = mapped_column(String(255), default=None)
    source: Mapped[str] = mapped_column(String(255), default="api")
    state: Mapped[str] = mapped_column(String(16), default="queued")  # queued | delivered | done | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    delivered_to: Mapped[str | None] = mapped_column(String(253), default=None)
    reply: Mapped[str | None] = mapped_column(Text, default=None)
    is_error: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    # Monotonic order within the store (created_at can tie).
    seq: Mapped[int] = mapped_column(Integer, default=0)
    # Where the reply goes: a channel kind ('slack' | 'local'), its conversation, and thread.
    # None for turns nobody waits for in a channel (API callers, undelivered schedules).
    reply_channel: Mapped[str | None] = mapped_column(String(16), default=None)
    reply_channel_id: Mapped[str | None] = mapped_column(String(63), default=None)
    reply_thread: Mapped[str | None] = mapped_column(String(64), default=None)
    # The inbound message this turn answers (for status reactions on it).
    message_id: Mapped[int | None] = mapped_column(Integer, default=None)
    # That message's id in its channel (Slack ts), so status reactions need no lookup.
    message_ref: Mapped[str | None] = mapped_column(String(64), default=None)

    __table_args__ = (
        Index("ix_turns_group_state", "namespace", "group", "state", "seq"),
        # enqueue() takes max(seq) + 1: with this index that is one lookup, not a scan of every turn.
        Index("ix_turns_seq", "seq"),
        # Retention (retention.py) finds the turns finished long ago without reading the whole table.
        Index("ix_turns_finished_at", "finished_at"),
    )


class UsageRow(Base):
    """Model usage: one row per proxied model call (source 'proxy') or per turn result ('runner')."""

    __tablename__ = "usage"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    namespace: Mapped[str] = mapped_column(String(63))
    group: Mapped[str] = mapped_column(String(63))
    run: Mapped[str] = mapped_column(String(253))
    source: Mapped[str] = mapped_column(String(16))
    model: Mapped[str | None] = mapped_column(String(100), default=None)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cache_read_input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cache_creation_input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)

    __table_args__ = (
        Index("ix_usage_group", "namespace", "group", "at"),
        Index("ix_usage_at", "at"),  # retention: the old rows without reading the whole table
    )


class MemoryRow(Base):
    """A fact an agent saved for its Group."""

    __tablename__ = "memories"

    namespace: Mapped[str] = mapped_column(String(63), primary_key=True)
    group: Mapped[str] = mapped_column(String(63), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    content: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)


class GroupSessionRow(Base):
    """Per-Group conversation state the gateway keeps (the session id itself lives on the Group's volume)."""

    __tablename__ = "group_sessions"

    namespace: Mapped[str] = mapped_column(String(63), primary_key=True)
    group: Mapped[str] = mapped_column(String(63), primary_key=True)
    session_id: Mapped[str | None] = mapped_column(String(128), default=None)
    reset_pending: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)


class MessageRow(Base):
    """A message seen in a channel: inbound (people) or outbound (the agent, once delivered)."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    direction: Mapped[str] = mapped_column(String(3))  # in | out
    channel: Mapped[str] = mapped_column(String(16))  # slack | local
    channel_id: Mapped[str] = mapped_column(String(63))
    thread: Mapped[str | None] = mapped_column(String(64), default=None)
    # The channel's own id of the message (Slack ts); None until known.
    external_id: Mapped[str | None] = mapped_column(String(64), default=None)
    # Inbound: 'slack:<event_id>' or 'local:<client message id>'. Unique, so a replayed event
    # is recognised by the database itself, even with two gateway processes.
    dedupe_key: Mapped[str | None] = mapped_column(String(200), default=None)
    namespace: Mapped[str | None] = mapped_column(String(63), default=None)
    group: Mapped[str | None] = mapped_column(String(63), default=None)
    sender: Mapped[str | None] = mapped_column(String(255), default=None)
    text: Mapped[str] = mapped_column(Text)
    # What became of an inbound message: queued | command | ignored; outbound: sent.
    outcome: Mapped[str] = mapped_column(String(16), default="")
    turn_id: Mapped[str | None] = mapped_column(String(64), default=None)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)

    __table_args__ = (
        UniqueConstraint("dedupe_key", name="uq_messages_dedupe_key"),
        Index("ix_messages_group", "namespace", "group", "id"),
        Index("ix_messages_at", "at"),  # retention: the old rows without reading the whole table
    )


class OutboundRow(Base):
    """The outbound ledger: every message to a channel is a row here before it is sent."""

    __tablename__ = "outbound"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Idempotency key: 'turn:<turn id>:<part>', 'send:<uuid>' (send_message), 'cmd:<dedupe key>'.
    key: Mapped[str] = mapped_column(String(200))
    namespace: Mapped[str] = mapped_column(String(63))
    group: Mapped[str] = mapped_column(String(63))
    turn_id: Mapped[str | None] = mapped_column(String(64), default=None)
    channel: Mapped[str | None] = mapped_column(String(16), default=None)  # None: no channel to deliver to
    channel_id: Mapped[str | None] = mapped_column(String(63), default=None)
    thread: Mapped[str | None] = mapped_column(String(64), default=None)
    text: Mapped[str] = mapped_column(Text)
    is_error: Mapped[bool] = mapped_column(Boolean, default=False)
    # pending (to send) | sent | failed (gave up) | stored (no channel: kept for the record)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    # The channel's id of the message once posted (Slack ts); a placeholder's before the final text.
    external_id: Mapped[str | None] = mapped_column(String(64), default=None)
    # Channel-specific layout as JSON (Slack Block Kit: an approval's buttons); text stays the fallback.
    blocks: Mapped[str | None] = mapped_column(Text, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)

    __table_args__ = (
        UniqueConstraint("key", name="uq_outbound_key"),
        Index("ix_outbound_state", "state", "id"),
        Index("ix_outbound_group", "namespace", "group", "id"),
        # Retention: the old rows in a final state, without reading the pending ones or every sent one.
        Index("ix_outbound_state_created_at", "state", "created_at"),
    )


class AuditRow(Base):
    """Every agent tool call, allowed or refused."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, server_default=func.now())
    namespace: Mapped[str] = mapped_column(String(63))
    group: Mapped[str] = mapped_column(String(63))
    run: Mapped[str] = mapped_column(String(253))
    action: Mapped[str] = mapped_column(String(64))
    target_group: Mapped[str | None] = mapped_column(String(63), default=None)
    allowed: Mapped[bool] = mapped_column(Boolean)
    detail: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_audit_at", "at"),)  # retention: the old rows without reading the whole table


class ApprovalRow(Base):
    """A tool call held for a person's decision (an 'ask' of the Group's tool policy)."""

    __tablename__ = "approvals"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # short, typed in 'approve <id>'
    # Idempotency key of the request: 'hook:<run uid>:<tool use id>' (the runner, retried across gateway
    # restarts) or 'call:<run uid>:<kind>:<call id>' (a call that reached the gateway unannounced).
    key: Mapped[str] = mapped_column(String(300))
    namespace: Mapped[str] = mapped_column(String(63))
    group: Mapped[str] = mapped_column(String(63))
    run: Mapped[str] = mapped_column(String(253))
    run_uid: Mapped[str] = mapped_column(String(64))
    turn_id: Mapped[str | None] = mapped_column(String(64), default=None)
    tool: Mapped[str] = mapped_column(String(200))  # the policy's name: Bash, pynchy/send_message, github/x
    args_digest: Mapped[str] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(Text)  # what the approver is shown
    # pending | approved | denied | expired; consumed once the approved call ran (one approval, one call)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    consumed: Mapped[bool] = mapped_column(Boolean, default=False)
    decided_by: Mapped[str | None] = mapped_column(String(255), default=None)
    channel: Mapped[str | None] = mapped_column(String(16), default=None)
    channel_id: Mapped[str | None] = mapped_column(String(63), default=None)
    thread: Mapped[str | None] = mapped_column(String(64), default=None)
    outbound_key: Mapped[str | None] = mapped_column(String(200), default=None)  # the request's ledger row
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    reported: Mapped[bool] = mapped_column(Boolean, default=False)  # the outcome shown in the channel

    __table_args__ = (
        UniqueConstraint("key", name="uq_approvals_key"),
        Index("ix_approvals_state_expires_at", "state", "expires_at"),
        Index("ix_approvals_group", "namespace", "group", "state"),
        Index("ix_approvals_run", "run_uid", "tool", "state"),
        Index("ix_approvals_decided_at", "decided_at"),  # retention: decided long ago (pending: NULL)
    )


class QuestionRow(Base):
    """Questions an agent asked the user (ask_user), waiting for their answers."""

    __tablename__ = "questions"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # typed in 'answer <id> …'
    key: Mapped[str] = mapped_column(String(300))  # 'ask:<run uid>:<call id>': a retried call finds its row
    namespace: Mapped[str] = mapped_column(String(63))
    group: Mapped[str] = mapped_column(String(63))
    run: Mapped[str] = mapped_column(String(253))
    turn_id: Mapped[str | None] = mapped_column(String(64), default=None)
    questions: Mapped[str] = mapped_column(Text)  # JSON: [{question, options, allowFreeText}]
    answers: Mapped[str] = mapped_column(Text, default="[]")  # JSON: one entry (or null) per question
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | answered | expired
    answered_by: Mapped[str | None] = mapped_column(String(255), default=None)
    channel: Mapped[str | None] = mapped_column(String(16), default=None)
    channel_id: Mapped[str | None] = mapped_column(String(63), default=None)
    thread: Mapped[str | None] = mapped_column(String(64), default=None)
    outbound_key: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    answered_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)

    __table_args__ = (
        UniqueConstraint("key", name="uq_questions_key"),
        Index("ix_questions_state_expires_at", "state", "expires_at"),
        Index("ix_questions_group", "namespace", "group", "state"),
        Index("ix_questions_answered_at", "answered_at"),  # retention: closed long ago (pending: NULL)
    )
