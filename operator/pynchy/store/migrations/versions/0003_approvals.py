"""Approvals: tool calls held for a person's decision (tool policy 'ask'), questions an agent asked
the user (ask_user), and the ledger's channel layout column (Slack Block Kit, for their buttons).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbound", sa.Column("blocks", sa.Text(), nullable=True))
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("group", sa.String(63), nullable=False),
        sa.Column("run", sa.String(253), nullable=False),
        sa.Column("run_uid", sa.String(64), nullable=False),
        sa.Column("turn_id", sa.String(64), nullable=True),
        sa.Column("tool", sa.String(200), nullable=False),
        sa.Column("args_digest", sa.String(64), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("consumed", sa.Boolean(), nullable=False),
        sa.Column("decided_by", sa.String(255), nullable=True),
        sa.Column("channel", sa.String(16), nullable=True),
        sa.Column("channel_id", sa.String(63), nullable=True),
        sa.Column("thread", sa.String(64), nullable=True),
        sa.Column("outbound_key", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reported", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("key", name="uq_approvals_key"),
    )
    op.create_index("ix_approvals_state_expires_at", "approvals", ["state", "expires_at"])
    op.create_index("ix_approvals_group", "approvals", ["namespace", "group", "state"])
    op.create_index("ix_approvals_run", "approvals", ["run_uid", "tool", "state"])
    op.create_index("ix_approvals_decided_at", "approvals", ["decided_at"])

    op.create_table(
        "questions",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("group", sa.String(63), nullable=False),
        sa.Column("run", sa.String(253), nullable=False),
        sa.Column("turn_id", sa.String(64), nullable=True),
        sa.Column("questions", sa.Text(), nullable=False),
        sa.Column("answers", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("answered_by", sa.String(255), nullable=True),
        sa.Column("channel", sa.String(16), nullable=True),
        sa.Column("channel_id", sa.String(63), nullable=True),
        sa.Column("thread", sa.String(64), nullable=True),
        sa.Column("outbound_key", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("key", name="uq_questions_key"),
    )
    op.create_index("ix_questions_state_expires_at", "questions", ["state", "expires_at"])
    op.create_index("ix_questions_group", "questions", ["namespace", "group", "state"])
    op.create_index("ix_questions_answered_at", "questions", ["answered_at"])


def downgrade() -> None:
    op.drop_table("questions")
    op.drop_table("approvals")
    with op.batch_alter_table("outbound") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("blocks")
