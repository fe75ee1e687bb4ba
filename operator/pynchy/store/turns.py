"""Turn queue operations. Every function takes the caller's Session and leaves committing to it."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import CursorResult, func, insert, or_, select, update
from sqlalchemy.orm import Session

from pynchy.store.models import TurnRow, table_of

QUEUED, DELIVERED, DONE, FAILED = "queued", "delivered", "done", "failed"
MAX_ATTEMPTS = 3
# pg_advisory_xact_lock key that serialises enqueues on PostgreSQL (see enqueue).
SEQ_LOCK_KEY = 0x70796E6368790002


def new_turn_id() -> str:
    return uuid.uuid4().hex


def enqueue(
    session: Session,
    namespace: str,
    group: str,
    prompt: str,
    *,
    turn_id: str | None = None,
    run: str | None = None,
    sender: str | None = None,
    source: str = "api",
    reply_channel: str | None = None,
    reply_channel_id: str | None = None,
    reply_thread: str | None = None,
    message_id: int | None = None,
    message_ref: str | None = None,
    fresh: bool = False,
) -> TurnRow:
    """Queue a turn (idempotent for a given turn_id: the existing row is returned). `fresh`: the
    caller just made turn_id up, so there is nothing to look for."""
    if turn_id is not None and not fresh:
        existing = session.get(TurnRow, turn_id)
        if existing is not None:
            return existing
    if session.get_bind().dialect.name == "postgresql":
        # Two transactions must not both read the same max(seq); this lock lasts until commit.
        # (SQLite transactions begin IMMEDIATE, so writers already take turns there.)
        session.execute(select(func.pg_advisory_xact_lock(SEQ_LOCK_KEY)))
    turns = table_of(TurnRow)
    # Core statements: this runs for every message, and the ORM's unit of work costs more than the SQL.
    seq = (session.execute(select(func.max(turns.c.seq))).scalar() or 0) + 1
    values = {
        "id": turn_id or new_turn_id(),
        "namespace": namespace,
        "group": group,
        "run": run,
        "prompt": prompt,
        "sender": sender,
        "source": source,
        "state": QUEUED,
        "attempts": 0,
        "is_error": False,
        "seq": seq,
        "created_at": datetime.now(UTC),
        "reply_channel": reply_channel,
        "reply_channel_id": reply_channel_id,
        "reply_thread": reply_thread,
        "message_id": message_id,
        "message_ref": message_ref,
    }
    session.execute(insert(turns).values(**values))
    return TurnRow(**values)  # a detached copy for the caller; the row is in the transaction


def claim_next(session: Session, namespace: str, group: str, run: str, *, bound_only: bool) -> TurnRow | None:
    """Hand the oldest queued turn to `run`: its own bound turns first, then (unless bound_only) the
    Group's unbound ones. The conditional UPDATE makes a claim exclusive even across processes.

    PostgreSQL: FOR UPDATE SKIP LOCKED, one row: claims at the same moment take different turns
    instead of all reaching for the oldest and coming back empty while turns wait. (SQLite has no
    row locks; its transactions begin IMMEDIATE, so claims there take turns.)"""
    where = [TurnRow.namespace == namespace, TurnRow.group == group, TurnRow.state == QUEUED]
    scope = TurnRow.run == run if bound_only else or_(TurnRow.run == run, TurnRow.run.is_(None))
    candidates = session.scalars(
        select(TurnRow).where(*where, scope).order_by(TurnRow.seq).limit(1).with_for_update(skip_locked=True)
    ).all()
    for row in candidates:
        claimed = session.execute(
            update(TurnRow)
            .where(TurnRow.id == row.id, TurnRow.state == QUEUED)
            .values(state=DELIVERED, delivered_to=run, delivered_at=datetime.now(UTC), attempts=TurnRow.attempts + 1)
        )
        assert isinstance(claimed, CursorResult)  # a DML statement's result has a row count
        if claimed.rowcount == 1:
            session.refresh(row)
            return row
    return None


def finish(session: Session, turn_id: str, run: str, reply: str, is_error: bool) -> TurnRow | None:
    """Record the result of a turn delivered to `run`; None if it is not that run's turn."""
    # FOR UPDATE (PostgreSQL): a concurrent requeue of this turn waits for us, or we for it.
    row = session.get(TurnRow, turn_id, with_for_update=True, populate_existing=True)
    if row is None or row.delivered_to != run or row.state not in (DELIVERED, QUEUED):
        return None
    row.state = FAILED if is_error else DONE
    row.reply = reply
    row.is_error = is_error
    row.finished_at = datetime.now(UTC)
    return row


def requeue_unfinished(session: Session, namespace: str, run: str, *, give_up: str | None = None) -> list[TurnRow]:
    """A run ended: its delivered but unanswered turns go back to the queue (or fail after
    MAX_ATTEMPTS), so no message is lost when a pod dies mid-turn. With `give_up` (the run timed
    out: another attempt would too) they fail at once with that message."""
    rows = session.scalars(
        select(TurnRow)
        .where(TurnRow.namespace == namespace, TurnRow.delivered_to == run, TurnRow.state == DELIVERED)
        .with_for_update()  # PostgreSQL: a result being recorded for one of them is not overwritten
        .execution_options(populate_existing=True)
    ).all()
    for row in rows:
        if give_up is not None or row.attempts >= MAX_ATTEMPTS or row.run is not None:
            row.state = FAILED
            row.is_error = True
            row.reply = give_up or f"the agent stopped before answering (attempt {row.attempts})"
            row.finished_at = datetime.now(UTC)
        else:
            row.state = QUEUED
            row.delivered_to = None
    return list(rows)


def fail_unstartable(
    session: Session, namespace: str, group: str, failed_starts: list[datetime], message: str
) -> list[TurnRow]:
    """Runs that were to take the Group's queued turns failed before taking any (their pods could
    not start: a clone error, OOM at start, a missing image). A queued turn fails with `message` once
    MAX_ATTEMPTS such runs were created after it (`failed_starts`: their creation times), so a Group
    whose pods cannot start answers instead of starting runs forever. Computed from the runs, not
    counted, so seeing the same runs again (a gateway restart) changes nothing. Returns the turns
    that failed."""
    rows = session.scalars(
        select(TurnRow)
        .where(TurnRow.namespace == namespace, TurnRow.group == group, TurnRow.state == QUEUED)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    failed = []
    for row in rows:
        # creationTimestamp has whole seconds: a run made in the turn's second counts as after it.
        since = row.created_at.replace(microsecond=0)
        attempts = sum(1 for t in failed_starts if t >= since)
        if attempts >= MAX_ATTEMPTS:
            row.state = FAILED
            row.is_error = True
            row.reply = f"the agent could not start ({attempts} attempts): {message}"
            row.finished_at = datetime.now(UTC)
            failed.append(row)
    return failed


def has_queued(session: Session, namespace: str, group: str) -> bool:
    return (
        session.scalar(
            select(func.count())
            .select_from(TurnRow)
            .where(TurnRow.namespace == namespace, TurnRow.group == group, TurnRow.state == QUEUED)
        )
        or 0
    ) > 0


def open_counts(session: Session, groups: Iterable[tuple[str, str]]) -> dict[tuple[str, str, str], int]:
    """(namespace, group, state) -> the Groups' queued and delivered turns (zeros left out). One indexed
    query per Group (ix_turns_group_state), so the cost follows the Groups, not the turns ever stored."""
    counts: dict[tuple[str, str, str], int] = {}
    for namespace, group in groups:
        rows = session.execute(
            select(TurnRow.state, func.count())
            .where(TurnRow.namespace == namespace, TurnRow.group == group, TurnRow.state.in_((QUEUED, DELIVERED)))
            .group_by(TurnRow.state)
        ).all()
        for state, count in rows:
            counts[(namespace, group, state)] = int(count)
    return counts


def get(session: Session, turn_id: str) -> TurnRow | None:
    return session.get(TurnRow, turn_id)


def delivered_to_run(session: Session, namespace: str, run: str) -> TurnRow | None:
    """The turn a run is working on now (the oldest delivered to it and not finished)."""
    stmt = (
        select(TurnRow)
        .where(TurnRow.namespace == namespace, TurnRow.delivered_to == run, TurnRow.state == DELIVERED)
        .order_by(TurnRow.seq)
        .limit(1)
    )
    return session.scalar(stmt)


def open_turns(session: Session, namespace: str, group: str) -> list[TurnRow]:
    """The Group's turns not yet answered (running first, then queued), in order."""
    rows = session.scalars(
        select(TurnRow)
        .where(TurnRow.namespace == namespace, TurnRow.group == group, TurnRow.state.in_((QUEUED, DELIVERED)))
        .order_by(TurnRow.seq)
    ).all()
    return sorted(rows, key=lambda r: (r.state != DELIVERED, r.seq))


def cancel_open(session: Session, namespace: str, group: str, reason: str) -> list[TurnRow]:
    """Fail every unanswered turn of the Group (the 'stop' command), so nothing requeues them."""
    rows = open_turns(session, namespace, group)
    now = datetime.now(UTC)
    for row in rows:
        row.state = FAILED
        row.is_error = True
        row.reply = reason
        row.finished_at = now
    return rows


def has_running(session: Session, namespace: str, group: str) -> bool:
    """Is a turn of the Group with a run right now (so a new message is a follow-up)?"""
    t = TurnRow.__table__.c
    found = session.execute(
        select(t.id).where(t.namespace == namespace, t.group == group, t.state == DELIVERED).limit(1)
    ).scalar()
    return found is not None


def answers_thread(session: Session, namespace: str, group: str, channel_id: str, thread: str) -> bool:
    """Has the Group's agent been asked something in this thread (so the thread is a conversation
    with it, and replies there need no fresh mention)?"""
    found = session.scalar(
        select(TurnRow.id)
        .where(
            TurnRow.namespace == namespace,
            TurnRow.group == group,
            TurnRow.reply_channel_id == channel_id,
            TurnRow.reply_thread == thread,
        )
        .limit(1)
    )
    return found is not None
