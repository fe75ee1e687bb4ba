"""Usage, memories, audit and per-Group session state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import CursorResult, delete, func, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pynchy.store.models import AuditRow, GroupSessionRow, MemoryRow, TurnRow, UsageRow, table_of


def record_usage(session: Session, row: UsageRow) -> None:
    session.add(row)


def record_usages(session: Session, rows: list[dict[str, Any]]) -> None:
    """Many usage records at once (column name -> value), one Core executemany: the model proxy's
    write-behind batch, without building an ORM object per call."""
    if rows:
        session.execute(insert(table_of(UsageRow)), rows)


def group_usage(session: Session, namespace: str, group: str, source: str = "proxy") -> dict[str, float]:
    totals = session.execute(
        select(
            func.coalesce(func.sum(UsageRow.input_tokens), 0),
            func.coalesce(func.sum(UsageRow.output_tokens), 0),
            func.count(),
        ).where(UsageRow.namespace == namespace, UsageRow.group == group, UsageRow.source == source)
    ).one()
    return {"input_tokens": totals[0], "output_tokens": totals[1], "calls": totals[2]}


def spend_since(session: Session, namespace: str, group: str, since: datetime) -> tuple[float, int]:
    """Cost (USD) and tokens the model proxy metered for a Group since ``since``."""
    totals = session.execute(
        select(
            func.coalesce(func.sum(UsageRow.cost_usd), 0.0),
            func.coalesce(
                func.sum(
                    UsageRow.input_tokens
                    + UsageRow.output_tokens
                    + UsageRow.cache_read_input_tokens
                    + UsageRow.cache_creation_input_tokens
                ),
                0,
            ),
        ).where(
            UsageRow.namespace == namespace,
            UsageRow.group == group,
            UsageRow.source == "proxy",
            UsageRow.at >= since,
        )
    ).one()
    return float(totals[0]), int(totals[1])


def group_activity(session: Session, namespace: str, group: str) -> tuple[str | None, datetime | None]:
    """The session id the Group's next run resumes, and when it last had a turn (read only)."""
    row = session.get(GroupSessionRow, (namespace, group))
    raw: object = session.execute(
        select(func.max(func.coalesce(TurnRow.finished_at, TurnRow.created_at))).where(
            TurnRow.namespace == namespace, TurnRow.group == group
        )
    ).scalar()
    # SQLite hands back a max() of timestamps as text, without the column type's conversion.
    last = datetime.fromisoformat(raw) if isinstance(raw, str) else raw if isinstance(raw, datetime) else None
    if last is not None and last.tzinfo is None:
        last = last.replace(tzinfo=UTC)
    return (row.session_id if row is not None else None), last


def save_memory(session: Session, namespace: str, group: str, key: str, content: str) -> bool:
    """Insert or replace; returns True when the key already existed."""
    row = session.get(MemoryRow, (namespace, group, key))
    if row is None:
        try:
            # A savepoint: the same key saved at the same moment by another transaction (PostgreSQL;
            # SQLite's writers take turns) loses here and becomes an update, not an error.
            with session.begin_nested():
                session.add(MemoryRow(namespace=namespace, group=group, key=key, content=content))
            return False
        except IntegrityError:
            row = session.get(MemoryRow, (namespace, group, key))
            if row is None:
                raise
    row.content = content
    row.updated_at = datetime.now(UTC)
    return True


def recall_memories(session: Session, namespace: str, group: str, query: str = "", limit: int = 50) -> list[MemoryRow]:
    stmt = select(MemoryRow).where(MemoryRow.namespace == namespace, MemoryRow.group == group)
    for word in query.split()[:8]:
        pattern = f"%{word.lower()}%"
        stmt = stmt.where(or_(func.lower(MemoryRow.key).like(pattern), func.lower(MemoryRow.content).like(pattern)))
    return list(session.scalars(stmt.order_by(MemoryRow.updated_at.desc()).limit(limit)))


def forget_memory(session: Session, namespace: str, group: str, key: str) -> bool:
    result = session.execute(
        delete(MemoryRow).where(MemoryRow.namespace == namespace, MemoryRow.group == group, MemoryRow.key == key)
    )
    assert isinstance(result, CursorResult)  # a DML statement's result has a row count
    return bool(result.rowcount)


def audit(
    session: Session,
    *,
    namespace: str,
    group: str,
    run: str,
    action: str,
    allowed: bool,
    target_group: str | None = None,
    detail: str = "",
) -> None:
    session.add(
        AuditRow(
            namespace=namespace,
            group=group,
            run=run,
            action=action,
            allowed=allowed,
            target_group=target_group,
            detail=detail[:4000],
            at=datetime.now(UTC),
        )
    )


def audit_log(session: Session, namespace: str, group: str | None = None) -> list[AuditRow]:
    stmt = select(AuditRow).where(AuditRow.namespace == namespace)
    if group is not None:
        stmt = stmt.where(AuditRow.group == group)
    return list(session.scalars(stmt.order_by(AuditRow.id)))


def group_session(session: Session, namespace: str, group: str) -> GroupSessionRow:
    row = session.get(GroupSessionRow, (namespace, group))
    if row is None:
        row = GroupSessionRow(namespace=namespace, group=group)
        try:
            with session.begin_nested():  # see save_memory: created at the same moment elsewhere
                session.add(row)
        except IntegrityError:
            row = session.get(GroupSessionRow, (namespace, group))
            if row is None:
                raise
    return row
