"""Approval requests: a tool call held until a person decides (tool policy 'ask').

A request is created once per key (a retried request finds its row), decided once (the first
decision wins: a compare-and-set from pending), and an approved request lets exactly one call run
(`consume`). Everything a decision needs is in the row, so one taken before a restart still counts.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pynchy.store.models import ApprovalRow

PENDING, APPROVED, DENIED, EXPIRED = "pending", "approved", "denied", "expired"
DECIDED = (APPROVED, DENIED, EXPIRED)
# No 0/o, 1/l/i: people type these ids ('approve k3f9x2').
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
ID_LENGTH = 6


def new_id() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(ID_LENGTH))


def create(
    session: Session,
    *,
    key: str,
    namespace: str,
    group: str,
    run: str,
    run_uid: str,
    tool: str,
    args_digest: str,
    summary: str,
    ttl_seconds: float,
    now: datetime,
    turn_id: str | None = None,
    channel: str | None = None,
    channel_id: str | None = None,
    thread: str | None = None,
) -> tuple[ApprovalRow, bool]:
    """The request for `key`: (row, created). An existing one is returned as it is (any state)."""
    existing = by_key(session, key)
    if existing is not None:
        return existing, False
    for _ in range(5):  # 31^6 ids: a collision is rare, two in a row rarer still
        row = ApprovalRow(
            id=new_id(),
            key=key,
            namespace=namespace,
            group=group,
            run=run,
            run_uid=run_uid,
            turn_id=turn_id,
            tool=tool,
            args_digest=args_digest,
            summary=summary,
            state=PENDING,
            consumed=False,
            channel=channel,
            channel_id=channel_id,
            thread=thread,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds),
            reported=False,
        )
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            winner = by_key(session, key)
            if winner is not None:  # the same request, created at the same moment elsewhere
                return winner, False
            continue  # an id collision: draw again
        return row, True
    raise RuntimeError("could not draw a free approval id")


def get(session: Session, approval_id: str) -> ApprovalRow | None:
    return session.get(ApprovalRow, approval_id)


def by_key(session: Session, key: str) -> ApprovalRow | None:
    return session.scalar(select(ApprovalRow).where(ApprovalRow.key == key))


def decide(session: Session, approval_id: str, state: str, by: str, now: datetime) -> ApprovalRow | None:
    """Decide a pending request; None when it is not pending any more (somebody was first)."""
    assert state in DECIDED
    changed = session.execute(
        update(ApprovalRow)
        .where(ApprovalRow.id == approval_id, ApprovalRow.state == PENDING)
        .values(state=state, decided_by=by, decided_at=now)
    )
    if changed.rowcount != 1:  # type: ignore[attr-defined]  # CursorResult of an UPDATE has it
        return None
    row = session.get(ApprovalRow, approval_id, populate_existing=True)
    assert row is not None
    return row


def pending(session: Session, namespace: str, group: str, limit: int = 50) -> list[ApprovalRow]:
    stmt = (
        select(ApprovalRow)
        .where(ApprovalRow.namespace == namespace, ApprovalRow.group == group, ApprovalRow.state == PENDING)
        .order_by(ApprovalRow.created_at)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def count_pending(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(ApprovalRow).where(ApprovalRow.state == PENDING)) or 0


def due(session: Session, now: datetime, limit: int = 100) -> list[ApprovalRow]:
    """Pending requests past their deadline."""
    stmt = (
        select(ApprovalRow)
        .where(ApprovalRow.state == PENDING, ApprovalRow.expires_at <= now)
        .order_by(ApprovalRow.expires_at)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def next_expiry(session: Session) -> datetime | None:
    stmt = select(ApprovalRow.expires_at).where(ApprovalRow.state == PENDING).order_by(ApprovalRow.expires_at).limit(1)
    return session.scalar(stmt)


def unreported(session: Session, limit: int = 100) -> list[ApprovalRow]:
    """Decided requests whose outcome the channel has not been shown yet (a restart in between)."""
    stmt = (
        select(ApprovalRow)
        .where(ApprovalRow.state.in_(DECIDED), ApprovalRow.reported.is_(False))
        .order_by(ApprovalRow.decided_at)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def mark_reported(session: Session, approval_id: str) -> None:
    session.execute(update(ApprovalRow).where(ApprovalRow.id == approval_id).values(reported=True))


def set_outbound_key(session: Session, approval_id: str, key: str) -> None:
    session.execute(update(ApprovalRow).where(ApprovalRow.id == approval_id).values(outbound_key=key))


def consume(session: Session, run_uid: str, tool: str, args_digest: str) -> ApprovalRow | None:
    """Take an approved, unused request of this run for exactly this call (tool and arguments);
    None when there is none. Each approval lets one call run."""
    candidates = session.scalars(
        select(ApprovalRow)
        .where(
            ApprovalRow.run_uid == run_uid,
            ApprovalRow.tool == tool,
            ApprovalRow.state == APPROVED,
            ApprovalRow.consumed.is_(False),
            ApprovalRow.args_digest == args_digest,
        )
        .order_by(ApprovalRow.decided_at)
    )
    for row in candidates:
        taken = session.execute(
            update(ApprovalRow).where(ApprovalRow.id == row.id, ApprovalRow.consumed.is_(False)).values(consumed=True)
        )
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            return row
    return None
