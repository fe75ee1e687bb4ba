"""ask_user: an agent's questions, asked in the chat the turn came from, answered by the people who
may talk to the agent (its allowedSenders), with Slack buttons or `answer <id> <n | words>`.

Like approvals, everything is in the store: the call is idempotent by its call id (the runner
retries it through a gateway restart and finds its question), answers are compare-and-set, and a
deadline column turns an unanswered question into a clear "nobody answered" result.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from pynchy.gateway import questionview as view
from pynchy.gateway.approvals import approval_timeout, asking_channel
from pynchy.gateway.channels.base import DecisionReply
from pynchy.gateway.db import Db
from pynchy.gateway.deadlines import Waiting, sweep_forever
from pynchy.gateway.delivery import Delivery
from pynchy.gateway.routing import Directory, sender_allowed
from pynchy.gateway.tools import Caller
from pynchy.logs import get_logger
from pynchy.store import outbound, records
from pynchy.store import questions as store
from pynchy.store import turns as turn_store
from pynchy.store.models import QuestionRow
from pynchy_agent.protocol import AskUserArgs, ToolResult

log = get_logger(__name__)
EXTRA_WAIT_SECONDS = 5.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(eq=False)  # a service: identity, not value
class Questions:
    db: Db
    delivery: Delivery
    directory: Directory
    owner: str | None
    clock: Callable[[], datetime] = _utc_now
    _kick: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _waiting: Waiting[QuestionRow] = field(init=False)

    def __post_init__(self) -> None:
        self._waiting = Waiting(lambda key: self.db.call(store.get, key), self._expire, lambda: self.clock())

    def timeout_of(self, namespace: str, group: str) -> int:
        return approval_timeout(self.directory, namespace, group)

    async def ask(self, caller: Caller, run_uid: str, args: AskUserArgs, call_id: str | None) -> ToolResult:
        """Post the questions (once per call id) and wait for every answer or the deadline."""
        key = f"ask:{run_uid}:{call_id}" if call_id else f"ask:{run_uid}:{self.clock().timestamp()}"
        qs = [q.wire() for q in args.questions]
        row, created = await self.db.call(self._create, caller, key, qs)
        if created:
            log.info("question asked", question=row.id, namespace=caller.namespace, group=caller.group, run=caller.run)
            self.delivery.kick()
            self._kick.set()
        timeout = self.timeout_of(caller.namespace, caller.group)
        final = await self._waiting.wait(row.id, timeout + EXTRA_WAIT_SECONDS) or row
        data = {"question": final.id, "state": final.state, "answers": view.answers(final)}
        return ToolResult(text=view.tool_result_text(final, timeout), data=data)

    def _create(
        self, session: Session, caller: Caller, key: str, qs: list[dict[str, object]]
    ) -> tuple[QuestionRow, bool]:
        current = turn_store.delivered_to_run(session, caller.namespace, caller.run)
        turn = current.id if current is not None else None
        row, created = store.create(
            session,
            key=key,
            namespace=caller.namespace,
            group=caller.group,
            run=caller.run,
            questions=qs,
            ttl_seconds=self.timeout_of(caller.namespace, caller.group),
            now=self.clock(),
            turn_id=turn,
            channel=asking_channel(session, self.directory, caller, turn),
        )
        if created:
            row.outbound_key = f"question:{row.id}"
            layout = view.request_blocks(row) if row.channel == "slack" else view.request_data(row)
            outbound.add(
                session,
                key=row.outbound_key,
                namespace=row.namespace,
                group=row.group,
                text=view.request_text(row),
                channel=row.channel,
                channel_id=row.channel_id,
                thread=row.thread,
                turn_id=row.turn_id,
                blocks=json.dumps(layout),
            )
        return row, created

    # -- answers -----------------------------------------------------------------------

    async def answer(
        self,
        question_id: str,
        sender: str,
        *,
        index: int | None = None,
        choice: int | None = None,
        text: str | None = None,
        namespace: str | None = None,
        group: str | None = None,
    ) -> DecisionReply:
        """One answer: option `choice` (0-based) or free `text`, to question `index` (None: the
        first one not answered yet)."""
        question_id = question_id.strip().lower()
        row = await self.db.call(store.get, question_id)
        if row is None or (group is not None and (row.namespace, row.group) != (namespace, group)):
            return DecisionReply(f"There is no question {question_id!r} here.", False)
        entry = self.directory.get(row.namespace, row.group)
        allowed = entry.spec.allowed_senders if entry is not None else ["owner"]
        if not sender_allowed(allowed, sender, self.owner):
            return DecisionReply(f"Only the people who may talk to {row.group}'s agent may answer it.", False)
        if row.state != store.PENDING:
            return DecisionReply(f"[{row.id}] is closed ({row.state}).", False)
        qs, given = view.questions(row), view.answers(row)
        if index is None:
            index = next((i for i, a in enumerate(given) if a is None), 0)
        if not 0 <= index < len(qs) or given[index] is not None:
            return DecisionReply(f"[{row.id}] question {index + 1} is answered already.", False)
        question = qs[index]
        if text is not None and text.strip().isdigit():
            choice, text = int(text.strip()) - 1, None
        if choice is not None:
            if not 0 <= choice < len(question["options"]):
                return DecisionReply(f"Pick a number from 1 to {len(question['options'])}.", False)
            value = str(question["options"][choice])
        elif text and question.get("allowFreeText"):
            value = text.strip()[:1000]
        else:
            return DecisionReply(f"Pick a number from 1 to {len(question['options'])}.", False)
        updated = await self.db.call(self._record, row.id, index, value, sender)
        if updated is None:
            return DecisionReply(f"[{row.id}] question {index + 1} was answered meanwhile.", False)
        self._wake_up(row.id)
        self.delivery.kick()
        rest = sum(1 for a in view.answers(updated) if a is None)
        log.info("question answered", question=row.id, index=index, by=sender, remaining=rest)
        more = f" ({rest} more to answer)" if rest else ""
        return DecisionReply(f"[{row.id}] {question['question']} → {value}{more}", True)

    def _record(self, session: Session, question_id: str, index: int, value: str, by: str) -> QuestionRow | None:
        row = store.record_answer(session, question_id, index, value, by, self.clock())
        if row is None:
            return None
        self._show(session, row)
        if row.state == store.ANSWERED:
            records.audit(
                session,
                namespace=row.namespace,
                group=row.group,
                run=row.run,
                action="ask_user:answered",
                allowed=True,
                detail=json.dumps({"question": row.id, "by": by, "answers": view.answers(row)})[:4000],
            )
        return row

    def _show(self, session: Session, row: QuestionRow) -> None:
        """Slack: the message shows what is answered (buttons of the rest stay); elsewhere the outcome
        follows as a message once the question is closed."""
        if row.channel == "slack" and row.outbound_key:
            blocks = view.request_blocks(row) if row.state == store.PENDING else view.outcome_blocks(row)
            text = view.request_text(row) if row.state == store.PENDING else view.outcome_text(row)
            outbound.restate(session, row.outbound_key, text, json.dumps(blocks))
        elif row.channel and row.state != store.PENDING:
            outbound.add(
                session,
                key=f"question:{row.id}:outcome",
                namespace=row.namespace,
                group=row.group,
                text=view.outcome_text(row),
                channel=row.channel,
                channel_id=row.channel_id,
                thread=row.thread,
                turn_id=row.turn_id,
            )

    async def _expire(self, question_id: str) -> None:
        def expire(session: Session) -> QuestionRow | None:
            row = store.expire(session, question_id, self.clock())
            if row is not None:
                self._show(session, row)
            return row

        if await self.db.call(expire) is not None:
            log.info("question expired", question=question_id)
        self._wake_up(question_id)
        self.delivery.kick()

    def _wake_up(self, question_id: str) -> None:
        self._waiting.wake(question_id)

    async def pending(self, namespace: str, group: str) -> list[QuestionRow]:
        return await self.db.call(store.pending, namespace, group)

    async def run(self) -> None:
        """The sweeper: questions past their deadline are closed (and the channel told)."""
        await sweep_forever(self._sweep_pass, self._kick, lambda: self.clock(), "question")

    async def _sweep_pass(self) -> datetime | None:
        for row in await self.db.call(store.due, self.clock()):
            await self._expire(row.id)
        return await self.db.call(store.next_expiry)
