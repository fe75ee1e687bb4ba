"""Indexes on the time columns retention prunes by (store/retention.py): a batch reads the index
entries of the rows it deletes, and a pass with nothing to delete reads almost nothing, not whole
tables. The ledger's index leads with the state, so the pending rows and the recent ones are not read.

Plain CREATE INDEX (no table copy on SQLite). On PostgreSQL it blocks writes to each table while
its index builds, once, inside the start-up migration.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (index, table, *columns)
INDEXES = [
    ("ix_messages_at", "messages", "at"),
    ("ix_turns_finished_at", "turns", "finished_at"),
    ("ix_outbound_state_created_at", "outbound", "state", "created_at"),
    ("ix_usage_at", "usage", "at"),
    ("ix_audit_at", "audit", "at"),
]


def upgrade() -> None:
    for name, table, *columns in INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, table, *_columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
