"""Questions an agent asked the user (ask_user): created once per key, answered one question at a
time (each answer a compare-and-set on the row's state), expired by deadline like approvals."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pynchy.store.approvals import new_id
from pynchy.store.models import QuestionRow

PENDING, ANSWERED, EXPIRED = "pending", "answered", "expired"


def create(
    session: Session,
    *,
    key: str,
    namespace: str,
    group: str,
    run: str,
    questions: list[dict[str, Any]],
    ttl_seconds: float,
    now: datetime,
    turn_id: str | None,
    channel: tuple[str, str, str | None] | None,
) -> tuple[QuestionRow, bool]:
    existing = session.scalar(select(QuestionRow).where(QuestionRow.key == key))
    if existing is not None:
        return existing, False
    for _ in range(5):
        row = QuestionRow(
            id=new_id(),
            key=key,
            namespace=namespace,
            group=group,
            run=run,
            turn_id=turn_id,
            questions=json.dumps(questions),
            answers=json.dumps([None] * len(questions)),
            state=PENDING,
            channel=channel[0] if channel else None,
            channel_id=channel[1] if channel else None,
            thread=channel[2] if channel else None,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds),
        )
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            winner = session.scalar(select(QuestionRow).where(QuestionRow.key == key))
            if winner is not None:
                return winner, False
            continue
        return row, True
    raise RuntimeError("could not draw a free question id")


def get(session: Session, question_id: str) -> QuestionRow | None:
    return session.get(QuestionRow, question_id)


def record_answer(
    session: Session, question_id: str, index: int, answer: str, by: str, now: datetime
) -> QuestionRow | None:
    """Answer question `index` of a pending row; None if it is not pending (or that one is answered).
    The last answer makes the row answered."""
    row = session.get(QuestionRow, question_id, with_for_update=True)
    if row is None or row.state != PENDING:
        return None
    answers = json.loads(row.answers)
    if not 0 <= index < len(answers) or answers[index] is not None:
        return None
    answers[index] = answer
    done = all(a is not None for a in answers)
    changed = session.execute(
        update(QuestionRow)
        .where(QuestionRow.id == question_id, QuestionRow.state == PENDING, QuestionRow.answers == row.answers)
        .values(
            answers=json.dumps(answers),
            answered_by=by,
            state=ANSWERED if done else PENDING,
            answered_at=now if done else None,
        )
    )
    if changed.rowcount != 1:  # type: ignore[attr-defined]  # another answer came first
        return None
    return session.get(QuestionRow, question_id, populate_existing=True)


def expire(session: Session, question_id: str, now: datetime) -> QuestionRow | None:
    changed = session.execute(
        update(QuestionRow)
        .where(QuestionRow.id == question_id, QuestionRow.state == PENDING)
        .values(state=EXPIRED, answered_at=now)
    )
    if changed.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.get(QuestionRow, question_id, populate_existing=True)


def due(session: Session, now: datetime, limit: int = 100) -> list[QuestionRow]:
    stmt = (
        select(QuestionRow)
        .where(QuestionRow.state == PENDING, QuestionRow.expires_at <= now)
        .order_by(QuestionRow.expires_at)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def next_expiry(session: Session) -> datetime | None:
    stmt = select(QuestionRow.expires_at).where(QuestionRow.state == PENDING).order_by(QuestionRow.expires_at)
    return session.scalar(stmt.limit(1))


def pending(session: Session, namespace: str, group: str, limit: int = 50) -> list[QuestionRow]:
    stmt = (
        select(QuestionRow)
        .where(QuestionRow.namespace == namespace, QuestionRow.group == group, QuestionRow.state == PENDING)
        .order_by(QuestionRow.created_at)
        .limit(limit)
    )
    return list(session.scalars(stmt))
