"""The initial schema: turns, usage, memories, group sessions, messages (inbound dedupe key), the
outbound ledger (idempotency key, delivery state) and the audit log.

Revision ID: 0001
Revises: (the first)
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("namespace", sa.String(length=63), nullable=False),
        sa.Column("group", sa.String(length=63), nullable=False),
        sa.Column("run", sa.String(length=253), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target_group", sa.String(length=63), nullable=True),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "group_sessions",
        sa.Column("namespace", sa.String(length=63), nullable=False),
        sa.Column("group", sa.String(length=63), nullable=False),
        sa.Column("session_id", sa.String(length=128), nullable=True),
        sa.Column("reset_pending", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("namespace", "group"),
    )
    op.create_table(
        "memories",
        sa.Column("namespace", sa.String(length=63), nullable=False),
        sa.Column("group", sa.String(length=63), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("namespace", "group", "key"),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("channel_id", sa.String(length=63), nullable=False),
        sa.Column("thread", sa.String(length=64), nullable=True),
        sa.Column("external_id", sa.String(length=64), nullable=True),
        sa.Column("dedupe_key", sa.String(length=200), nullable=True),
        sa.Column("namespace", sa.String(length=63), nullable=True),
        sa.Column("group", sa.String(length=63), nullable=True),
        sa.Column("sender", sa.String(length=255), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("turn_id", sa.String(length=64), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedupe_key", name="uq_messages_dedupe_key"),
    )
    op.create_index("ix_messages_group", "messages", ["namespace", "group", "id"], unique=False)
    op.create_table(
        "outbound",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("namespace", sa.String(length=63), nullable=False),
        sa.Column("group", sa.String(length=63), nullable=False),
        sa.Column("turn_id", sa.String(length=64), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.Column("channel_id", sa.String(length=63), nullable=True),
        sa.Column("thread", sa.String(length=64), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("is_error", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("external_id", sa.String(length=64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key", name="uq_outbound_key"),
    )
    op.create_index("ix_outbound_group", "outbound", ["namespace", "group", "id"], unique=False)
    op.create_index("ix_outbound_state", "outbound", ["state", "id"], unique=False)
    op.create_table(
        "turns",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("namespace", sa.String(length=63), nullable=False),
        sa.Column("group", sa.String(length=63), nullable=False),
        sa.Column("run", sa.String(length=253), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("sender", sa.String(length=255), nullable=True),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("delivered_to", sa.String(length=253), nullable=True),
        sa.Column("reply", sa.Text(), nullable=True),
        sa.Column("is_error", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("reply_channel", sa.String(length=16), nullable=True),
        sa.Column("reply_channel_id", sa.String(length=63), nullable=True),
        sa.Column("reply_thread", sa.String(length=64), nullable=True),
        sa.Column("message_id", sa.Integer(), nullable=True),
        sa.Column("message_ref", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_turns_group_state", "turns", ["namespace", "group", "state", "seq"], unique=False)
    op.create_index("ix_turns_seq", "turns", ["seq"], unique=False)
    op.create_table(
        "usage",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("namespace", sa.String(length=63), nullable=False),
        sa.Column("group", sa.String(length=63), nullable=False),
        sa.Column("run", sa.String(length=253), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cache_read_input_tokens", sa.Integer(), nullable=False),
        sa.Column("cache_creation_input_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_usage_group", "usage", ["namespace", "group", "at"], unique=False)


def downgrade() -> None:
    op.drop_table("usage")
    op.drop_table("turns")
    op.drop_table("outbound")
    op.drop_table("messages")
    op.drop_table("memories")
    op.drop_table("group_sessions")
    op.drop_table("audit")
