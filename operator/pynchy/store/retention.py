"""Retention: how long the store keeps each kind of row, and deleting what is older in small batches.

`prune_batch(session, kind, cutoff, limit)` deletes at most `limit` rows in the caller's
transaction; the gateway's pruner (gateway/pruner.py) runs one batch per transaction and yields
between them, so a writer (SQLite has one) waits at most one short batch.

Never deleted, whatever their age:

* turns not finished (queued, delivered), and the newest turn of each Group: it is the Group's last
  activity in its status, and it keeps `max(seq)` (enqueue's next number) from going back;
* ledger rows not final (pending, streaming), and any row of a turn not finished (a streamed
  reply's row goes back to pending when its final text arrives);
* usage since `usage_floor(now)`: budgets read the current day and month in each Group's zone;
* approval requests and agent questions still pending (their decision time is empty);
* the newest row of each table with a serial id: SQLite numbers a new row max(id) + 1, so deleting
  the newest would hand its id out again, and ids are cursors (the local channel reads the ledger
  after an id).

A kind is one `Kind(...)` line in KINDS (and its setting in gateway/settings.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, CursorResult, Select, and_, delete, exists, select, true
from sqlalchemy import func as sql
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from pynchy.store import outbound, turns
from pynchy.store.models import ApprovalRow, AuditRow, MessageRow, OutboundRow, QuestionRow, TurnRow, UsageRow

# The zones furthest east are UTC+14: no budget's day or month starts earlier, relative to UTC.
EARLIEST_ZONE = timedelta(hours=14)
# The furthest back usage_floor ever reaches (from the end of August, a 31-day month after a 31-day
# month, to 1 July less 14 hours) is 62 days 14 hours; a shorter usage period could not be honoured.
USAGE_MIN_DAYS = 63
DEFAULT_BATCH_SIZE = 500
MAX_DAYS = 36_500  # a hundred years: a cutoff that still fits in a datetime


def usage_floor(now: datetime) -> datetime:
    """Usage at or after this is never deleted: the start of the previous calendar month in UTC, less
    14 hours. Every budget period (gateway/budget.py: the day and the month in the budget's zone)
    starts after it, in any zone; the previous month in UTC stays whole too."""
    month = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    previous = (month - timedelta(days=1)).replace(day=1)
    return previous - EARLIEST_ZONE


def _finished_turns() -> ColumnElement[bool]:
    newer = aliased(TurnRow)
    return and_(
        TurnRow.state.in_((turns.DONE, turns.FAILED)),
        exists().where(newer.namespace == TurnRow.namespace, newer.group == TurnRow.group, newer.seq > TurnRow.seq),
    )


def _final_ledger_rows() -> ColumnElement[bool]:
    open_turn = exists().where(TurnRow.id == OutboundRow.turn_id, TurnRow.state.in_((turns.QUEUED, turns.DELIVERED)))
    return and_(OutboundRow.state.in_((outbound.SENT, outbound.FAILED, outbound.STORED)), ~open_turn)


@dataclass(frozen=True)
class Kind:
    name: str
    id: InstrumentedAttribute[Any]  # the primary key: batches are chosen and deleted by it
    # A row's age counts from here. Indexed (migration 0002), so that SQLite, which has no statistics,
    # reads a batch off this index: check a new kind with EXPLAIN QUERY PLAN (test_retention does).
    at: InstrumentedAttribute[Any]
    default_days: int
    # Which rows may go at all, whatever their age (None: every row).
    only: Callable[[], ColumnElement[bool]] | None = None
    serial: bool = True  # an autoincrement id: the newest row stays (see the module docstring)
    # now -> rows at or after this stay, whatever the period says.
    floor: Callable[[datetime], datetime] | None = None


KINDS: tuple[Kind, ...] = (
    Kind("messages", MessageRow.id, MessageRow.at, 90),
    Kind("turns", TurnRow.id, TurnRow.finished_at, 90, _finished_turns, serial=False),
    Kind("outbound", OutboundRow.id, OutboundRow.created_at, 30, _final_ledger_rows),
    Kind("usage", UsageRow.id, UsageRow.at, 400, floor=usage_floor),
    Kind("audit", AuditRow.id, AuditRow.at, 365),
    # Decided (or closed) long ago; a pending request has no decision time, so it is never old.
    Kind("approvals", ApprovalRow.id, ApprovalRow.decided_at, 90, serial=False),
    Kind("questions", QuestionRow.id, QuestionRow.answered_at, 90, serial=False),
)
KIND = {kind.name: kind for kind in KINDS}
DEFAULT_DAYS = {kind.name: kind.default_days for kind in KINDS}


@dataclass(frozen=True)
class RetentionPolicy:
    """Days each kind is kept (0: forever; a kind not named keeps its default) and rows per batch."""

    days: Mapping[str, int] = field(default_factory=dict)
    batch_size: int = DEFAULT_BATCH_SIZE

    def __post_init__(self) -> None:
        unknown = sorted(set(self.days) - set(KIND))
        if unknown:
            raise ValueError(f"no such kind of row: {', '.join(unknown)} (kinds: {', '.join(KIND)})")
        for name, days in self.days.items():
            if not 0 <= days <= MAX_DAYS:
                raise ValueError(f"{name}: {days} days; give 0 (keep forever) to {MAX_DAYS}")
        if self.batch_size < 1:
            raise ValueError(f"batch size {self.batch_size}: at least 1 row per batch")

    def days_of(self, kind: str) -> int:
        return self.days.get(kind, KIND[kind].default_days)

    def cutoffs(self, now: datetime) -> dict[str, datetime]:
        """Per kind with a limited period, in KINDS order: rows older than this may go. UTC (SQLite
        compares the stored UTC wall time as text)."""
        now = now.astimezone(UTC)
        result: dict[str, datetime] = {}
        for kind in KINDS:
            days = self.days_of(kind.name)
            if days == 0:
                continue
            cutoff = now - timedelta(days=days)
            result[kind.name] = min(cutoff, kind.floor(now)) if kind.floor is not None else cutoff
        return result


def _prunable(session: Session, kind: Kind, cutoff: datetime) -> ColumnElement[bool]:
    conditions = [kind.at < cutoff, kind.only() if kind.only is not None else true()]
    newest = session.scalar(select(sql.max(kind.id))) if kind.serial else None
    if newest is not None:
        # Not `id < newest`: a range on the id would draw SQLite's planner to an (x, id) index.
        conditions.append(kind.id != newest)
    return and_(*conditions)


def batch_select(
    session: Session, kind: str, cutoff: datetime, limit: int
) -> tuple[Select[tuple[Any]], ColumnElement[bool]]:
    """The ids of the next batch to delete, and the condition they were chosen by. In no particular
    order: read off the time index, no sort (test_retention checks the plans)."""
    spec = KIND[kind]
    where = _prunable(session, spec, cutoff)
    return select(spec.id).where(where).limit(limit), where


def prune_batch(session: Session, kind: str, cutoff: datetime, limit: int) -> int:
    """Delete up to `limit` rows of `kind` older than `cutoff` that may go, in the caller's
    transaction; returns how many. Fewer than `limit`: nothing more was due (or a row changed
    meanwhile; the next pass looks again)."""
    spec = KIND[kind]
    query, where = batch_select(session, kind, cutoff, limit)
    ids = session.scalars(query).all()
    if not ids:
        return 0
    # The condition again: a row can change between the two statements (PostgreSQL re-checks it on
    # a row another transaction changed meanwhile, e.g. a ledger row put back to pending).
    stmt = delete(spec.id.class_).where(spec.id.in_(ids), where).execution_options(synchronize_session=False)
    result = session.execute(stmt)
    assert isinstance(result, CursorResult)  # a DML statement's result has a row count
    return result.rowcount
