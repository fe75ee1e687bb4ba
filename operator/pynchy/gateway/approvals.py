"""Approval requests: a tool call the Group's policy says to `ask` about waits here for a person.

    row = await approvals.request(caller, run_uid, tool, summary, digest, key=..., turn_id=...)
    row = await approvals.wait(row.id, timeout)         # until decided, expired or `timeout`
    reply = await approvals.decide(row.id, True, "slack:U0123ABCD")   # a button or 'approve <id>'

Everything is in the store (store/approvals.py): a request survives a gateway restart, a retried
request finds its row by key, the first decision wins, and the deadline is a column, so a
request nobody decides is denied by whichever process sweeps next. Waiters are woken in process
and also re-read their row every second, so a decision taken by another replica reaches them.
The request is posted to the channel the turn came from (Slack: Block Kit buttons); its outcome
replaces the buttons (or follows as a message in channels that cannot edit).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from pynchy.api.group import DEFAULT_APPROVAL_TIMEOUT_SECONDS
from pynchy.gateway import approvalview as view
from pynchy.gateway.channels.base import DecisionReply
from pynchy.gateway.db import Db
from pynchy.gateway.deadlines import Waiting, sweep_forever
from pynchy.gateway.delivery import Delivery
from pynchy.gateway.routing import Directory, sender_allowed
from pynchy.gateway.tools import Caller
from pynchy.logs import get_logger
from pynchy.store import approvals as store
from pynchy.store import outbound, records
from pynchy.store import turns as turn_store
from pynchy.store.models import ApprovalRow

log = get_logger(__name__)


Clock = Callable[[], datetime]
RunEnded = Callable[[str, str], bool]  # (namespace, run name) -> the run is over or gone


def _utc_now() -> datetime:
    return datetime.now(UTC)


def approval_timeout(directory: Directory, namespace: str, group: str) -> int:
    """How long the Group's people have to decide (or answer): its tool policy's, else the API default."""
    entry = directory.get(namespace, group)
    policy = entry.spec.agent.tool_policy if entry is not None else None
    return policy.approval_timeout_seconds if policy is not None else DEFAULT_APPROVAL_TIMEOUT_SECONDS


def asking_channel(
    session: Session, directory: Directory, caller: Caller, turn_id: str | None
) -> tuple[str, str, str | None] | None:
    """Where a person is asked: the asking turn's channel and thread, else the Group's first channel."""
    turn = turn_store.get(session, turn_id) if turn_id else None
    if turn is None:
        turn = turn_store.delivered_to_run(session, caller.namespace, caller.run)
    if turn is not None and turn.reply_channel and turn.reply_channel_id:
        return (turn.reply_channel, turn.reply_channel_id, turn.reply_thread)
    entry = directory.get(caller.namespace, caller.group)
    if entry is None:
        return None
    kind, channel_id = entry.default_channel()
    return (kind, channel_id, None)


@dataclass(eq=False)  # a service: identity, not value
class Approvals:
    db: Db
    delivery: Delivery
    directory: Directory
    owner: str | None  # the Slack user 'owner' stands for (the local channel's user is always 'owner')
    run_ended: RunEnded
    clock: Clock = _utc_now
    _kick: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _waiting: Waiting[ApprovalRow] = field(init=False)

    def __post_init__(self) -> None:
        self._waiting = Waiting(lambda key: self.db.call(store.get, key), self._expire, lambda: self.clock())

    # -- asking ------------------------------------------------------------------------

    def timeout_of(self, namespace: str, group: str) -> int:
        return approval_timeout(self.directory, namespace, group)

    async def request(
        self,
        caller: Caller,
        run_uid: str,
        tool: str,
        summary: str,
        digest: str,
        *,
        key: str,
        turn_id: str | None = None,
    ) -> ApprovalRow:
        """The request for `key`, created and posted to the chat the first time (idempotent)."""
        row, created = await self.db.call(self._create, caller, run_uid, tool, summary, digest, key, turn_id)
        if created:
            log.info(
                "approval requested",
                approval=row.id,
                namespace=caller.namespace,
                group=caller.group,
                run=caller.run,
                tool=tool,
            )
            self.delivery.kick()
            self._kick.set()  # the sweeper's next deadline may be this one
        return row

    def _create(
        self,
        session: Session,
        caller: Caller,
        run_uid: str,
        tool: str,
        summary: str,
        digest: str,
        key: str,
        turn_id: str | None,
    ) -> tuple[ApprovalRow, bool]:
        channel = asking_channel(session, self.directory, caller, turn_id)
        row, created = store.create(
            session,
            key=key,
            namespace=caller.namespace,
            group=caller.group,
            run=caller.run,
            run_uid=run_uid,
            tool=tool,
            args_digest=digest,
            summary=summary,
            ttl_seconds=self.timeout_of(caller.namespace, caller.group),
            now=self.clock(),
            turn_id=turn_id,
            channel=channel[0] if channel else None,
            channel_id=channel[1] if channel else None,
            thread=channel[2] if channel else None,
        )
        if created:
            out_key = f"approval:{row.id}"
            blocks = json.dumps(view.request_blocks(row) if row.channel == "slack" else view.request_data(row))
            outbound.add(
                session,
                key=out_key,
                namespace=row.namespace,
                group=row.group,
                text=view.request_text(row),
                channel=row.channel,
                channel_id=row.channel_id,
                thread=row.thread,
                turn_id=turn_id,
                blocks=blocks,
            )
            row.outbound_key = out_key
            records.audit(
                session,
                namespace=row.namespace,
                group=row.group,
                run=row.run,
                action=f"approval:{tool}"[:64],
                allowed=False,
                detail=json.dumps({"approval": row.id, "tool": tool, "argsDigest": digest, "decision": "ask"}),
            )
        return row, created

    async def wait(self, approval_id: str, timeout: float) -> ApprovalRow | None:
        """The request once it is decided, or as it is after `timeout` seconds (None if it is gone)."""
        return await self._waiting.wait(approval_id, timeout)

    async def consume(self, run_uid: str, tool: str, digest: str) -> ApprovalRow | None:
        """An approved request of this run for exactly this call, used up (one approval, one call)."""
        return await self.db.call(store.consume, run_uid, tool, digest)

    # -- deciding ----------------------------------------------------------------------

    def approvers_of(self, namespace: str, group: str) -> list[str]:
        entry = self.directory.get(namespace, group)
        policy = entry.spec.agent.tool_policy if entry is not None else None
        return list(policy.approvers) if policy is not None else ["owner"]

    async def decide(
        self, approval_id: str, approve: bool, sender: str, *, namespace: str | None = None, group: str | None = None
    ) -> DecisionReply:
        """A person's decision. `namespace`/`group`: the text command came from that Group's channel,
        so only its own requests are found there."""
        approval_id = approval_id.strip().lower()
        row = await self.db.call(store.get, approval_id)
        if row is None or (group is not None and (row.namespace, row.group) != (namespace, group)):
            return DecisionReply(f"There is no approval request {approval_id!r} here; `pending` lists them.", False)
        if not sender_allowed(self.approvers_of(row.namespace, row.group), sender, self.owner):
            await self._audit_refusal(row, sender)
            return DecisionReply(f"Only an approver of {row.group} may decide [{row.id}]; you are not one.", False)
        if row.state != store.PENDING:
            return DecisionReply(f"[{row.id}] was already decided: {view.outcome_line(row)}.", False)
        if row.expires_at <= self.clock():
            await self._expire(row.id)
            return DecisionReply(f"[{row.id}] had expired: it was denied.", False)
        state = store.APPROVED if approve else store.DENIED
        decided = await self.db.call(self._decide, row.id, state, sender)
        if decided is None:  # somebody else was first
            row = await self.db.call(store.get, approval_id) or row
            return DecisionReply(f"[{row.id}] was already decided: {view.outcome_line(row)}.", False)
        self.decided(decided.id)
        ended = self.run_ended(decided.namespace, decided.run)
        log.info("approval decided", approval=decided.id, state=state, by=sender, run_ended=ended)
        text = f"[{decided.id}] {view.outcome_line(decided, run_ended=ended)}."
        return DecisionReply(text, True)

    def _decide(self, session: Session, approval_id: str, state: str, by: str) -> ApprovalRow | None:
        row = store.decide(session, approval_id, state, by, self.clock())
        if row is None:
            return None
        ended = self.run_ended(row.namespace, row.run)
        self._report(session, row, ended)
        records.audit(
            session,
            namespace=row.namespace,
            group=row.group,
            run=row.run,
            action=f"approval:{row.tool}"[:64],
            allowed=state == store.APPROVED,
            detail=json.dumps(
                {
                    "approval": row.id,
                    "tool": row.tool,
                    "argsDigest": row.args_digest,
                    "decision": state,
                    "decidedBy": by,
                    "runEnded": ended,
                }
            ),
        )
        return row

    def _report(self, session: Session, row: ApprovalRow, run_ended: bool) -> None:
        """Show the outcome where the request was posted, in the same transaction as the decision."""
        if row.channel == "slack" and row.outbound_key:
            blocks = json.dumps(view.outcome_blocks(row, run_ended=run_ended))
            outbound.restate(session, row.outbound_key, view.outcome_text(row, run_ended=run_ended), blocks)
        elif row.channel:
            outbound.add(
                session,
                key=f"approval:{row.id}:outcome",
                namespace=row.namespace,
                group=row.group,
                text=view.outcome_text(row, run_ended=run_ended),
                channel=row.channel,
                channel_id=row.channel_id,
                thread=row.thread,
                turn_id=row.turn_id,
            )
        store.mark_reported(session, row.id)

    async def _audit_refusal(self, row: ApprovalRow, sender: str) -> None:
        detail = json.dumps({"approval": row.id, "tool": row.tool, "decision": "refused", "by": sender})
        await self.db.call(
            records.audit,
            namespace=row.namespace,
            group=row.group,
            run=row.run,
            action=f"approval:{row.tool}"[:64],
            allowed=False,
            detail=detail,
        )
        log.info("approval decision refused: not an approver", approval=row.id, by=sender)

    async def _expire(self, approval_id: str) -> None:
        if await self.db.call(self._decide, approval_id, store.EXPIRED, "timeout") is not None:
            log.info("approval expired", approval=approval_id)
        self._wake_up(approval_id)
        self.delivery.kick()

    def _wake_up(self, approval_id: str) -> None:
        self._waiting.wake(approval_id)

    def decided(self, approval_id: str) -> None:
        """Wake the waiters of a request decided in this process."""
        self._wake_up(approval_id)
        self.delivery.kick()

    async def pending(self, namespace: str, group: str) -> list[ApprovalRow]:
        return await self.db.call(store.pending, namespace, group)

    # -- the sweeper -------------------------------------------------------------------

    async def sweep(self) -> None:
        """Deny what is past its deadline; show outcomes a crash left unreported."""
        for row in await self.db.call(store.due, self.clock()):
            await self._expire(row.id)
        for row in await self.db.call(store.unreported):
            await self.db.call(self._report_again, row.id)
            self.delivery.kick()

    def _report_again(self, session: Session, approval_id: str) -> None:
        row = store.get(session, approval_id)
        if row is not None and not row.reported:
            self._report(session, row, self.run_ended(row.namespace, row.run))

    async def run(self) -> None:
        await sweep_forever(self._sweep_pass, self._kick, lambda: self.clock(), "approval")

    async def _sweep_pass(self) -> datetime | None:
        await self.sweep()
        return await self.db.call(store.next_expiry)
