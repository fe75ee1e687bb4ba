"""Answers to magic commands (reset, stop, pending): written by the gateway, sent through the
ledger like any reply, audited."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from pynchy.gateway.agentruns import AgentRuns
from pynchy.gateway.approvals import Approvals
from pynchy.gateway.channels.base import Inbound
from pynchy.gateway.commands import HELP, Command
from pynchy.gateway.db import Db
from pynchy.gateway.hooks import ChannelHooks
from pynchy.gateway.outbox import Outbox
from pynchy.gateway.questions import Questions
from pynchy.gateway.replies import fail_turns
from pynchy.gateway.routing import GroupEntry
from pynchy.gateway.turnhub import TurnHub
from pynchy.kube.api import KubeApi
from pynchy.logs import get_logger
from pynchy.store import records
from pynchy.store import turns as turn_store

log = get_logger(__name__)
PENDING_LISTED = 20


@dataclass(eq=False)  # a service: identity, not value
class CommandRunner:
    db: Db
    api: KubeApi
    hub: TurnHub
    runs: AgentRuns
    hooks: ChannelHooks
    outbox: Outbox
    approvals: Approvals
    questions: Questions

    async def run(self, entry: GroupEntry, inbound: Inbound, command: Command, argument: str = "") -> str:
        """Answer a command; the answer goes back through the ledger, keyed by the message."""
        ns, group = entry.namespace, entry.name
        if command in (Command.APPROVE, Command.DENY):
            answer = await self.approvals.decide(
                argument, command == Command.APPROVE, inbound.sender, namespace=ns, group=group
            )
            reply = answer.text
        elif command == Command.ANSWER:
            question_id, _, words = argument.partition(" ")
            reply = (
                await self.questions.answer(question_id, inbound.sender, text=words, namespace=ns, group=group)
            ).text
        elif command == Command.RESET:
            await self.db.call(_mark_reset, ns, group)
            reply = "Done: the next message starts a fresh conversation (saved memories are kept)."
        elif command == Command.STOP:
            reply = await self._stop_group(entry, inbound.sender)
        else:
            reply = await self._pending_text(ns, group)
        await self.outbox.add(
            key=f"cmd:{inbound.dedupe_key}",
            namespace=ns,
            group=group,
            text=reply,
            channel=inbound.channel,
            channel_id=inbound.channel_id,
            thread=entry.reply_thread(inbound),
        )
        log.info("command", namespace=ns, group=group, command=command.value, sender=inbound.sender)
        await self.db.call(
            records.audit,
            namespace=ns,
            group=group,
            run="-",
            action=f"command:{command.value}",
            allowed=True,
            detail=f"by {inbound.sender}",
        )
        return reply

    async def _stop_group(self, entry: GroupEntry, sender: str) -> str:
        ns, group = entry.namespace, entry.name
        cancelled = await self.db.call(turn_store.cancel_open, ns, group, f"stopped by {sender}")
        for row in cancelled:
            self.hub.publish_failure(row.id, row.reply or "stopped")
            self.hooks.ended(row, False)
        if cancelled:  # whoever asked hears that their message was dropped
            await self.db.call(fail_turns, cancelled, self.hooks.limits, None)
        stopped = []
        for run in self.runs.group_runs(ns, group):
            if not run.over:
                try:
                    await self.api.delete("AgentRun", ns, run.name)
                    stopped.append(run.name)
                except Exception as exc:
                    log.warning("could not stop run", namespace=ns, run=run.name, error=str(exc))
        if not cancelled and not stopped:
            return "Nothing to stop: no run is active and nothing is queued."
        return f"Stopped: {len(stopped)} run(s) ended, {len(cancelled)} message(s) dropped."

    async def _pending_text(self, ns: str, group: str) -> str:
        rows = await self.db.call(turn_store.open_turns, ns, group)
        asks = await self.approvals.pending(ns, group)
        questions = await self.questions.pending(ns, group)
        if not rows and not asks and not questions:
            return "Nothing pending. " + HELP
        lines = [f"- approval [{a.id}]: {a.tool} (`approve {a.id}` / `deny {a.id}`)" for a in asks]
        lines += [f"- question [{q.id}] from the agent (`answer {q.id} <number>`)" for q in questions]
        for row in rows[:PENDING_LISTED]:
            state = "running" if row.state == turn_store.DELIVERED else "queued"
            prompt = row.prompt if len(row.prompt) <= 80 else row.prompt[:77] + "..."
            lines.append(f"- {state}: {prompt}")
        more = f"\n…and {len(rows) - PENDING_LISTED} more" if len(rows) > PENDING_LISTED else ""
        return "Pending:\n" + "\n".join(lines) + more


def _mark_reset(session: Session, namespace: str, group: str) -> None:
    records.group_session(session, namespace, group).reset_pending = True
