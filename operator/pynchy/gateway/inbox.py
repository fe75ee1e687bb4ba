"""Messages in: dedupe, route, store and queue in one transaction, then make sure a run answers.

A message's dedupe key is unique in the store, so a replayed Slack event or a retried local POST
finds the first one and does nothing, even across a gateway restart or a second process."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from pynchy.aio import LogOnce
from pynchy.gateway.channels.base import Accepted, Inbound, Outcome
from pynchy.gateway.commands import Command
from pynchy.gateway.db import Db
from pynchy.gateway.metrics import InboundMetrics
from pynchy.gateway.routing import Decision, Directory, GroupEntry, decide
from pynchy.logs import get_logger
from pynchy.store import messages
from pynchy.store import turns as turn_store
from pynchy.store.models import MessageRow, TurnRow

RunCommand = Callable[[GroupEntry, Inbound, Command, str], Awaitable[str]]  # (…, argument)

log = get_logger(__name__)


@dataclass
class Stored:
    message: MessageRow
    created: bool
    turn: TurnRow | None = None
    follow_up: bool = False


def store_inbound(session: Session, inbound: Inbound, entry: GroupEntry | None, decision: Decision | None) -> Stored:
    """Record the message once; queue its turn when the decision says so. One transaction."""
    queue = entry is not None and decision is not None and decision.action == "turn"
    if entry is None or decision is None or decision.action == "ignore":
        outcome = Outcome.IGNORED
    else:
        outcome = Outcome.QUEUED if queue else Outcome.COMMAND
    turn_id = turn_store.new_turn_id() if queue else None
    message, created = messages.record_inbound(
        session,
        dedupe_key=inbound.dedupe_key,
        channel=inbound.channel,
        channel_id=inbound.channel_id,
        text=inbound.text,
        sender=inbound.sender,
        thread=inbound.thread,
        external_id=inbound.external_id,
        namespace=entry.namespace if entry else None,
        group=entry.name if entry else None,
        outcome=outcome.value,
        turn_id=turn_id,
    )
    if not created:
        turn = turn_store.get(session, message.turn_id) if message.turn_id else None
        return Stored(message, False, turn)
    if not queue:
        return Stored(message, True)
    assert entry is not None
    assert decision is not None
    running = turn_store.has_running(session, entry.namespace, entry.name)
    turn = turn_store.enqueue(
        session,
        entry.namespace,
        entry.name,
        decision.text,
        turn_id=turn_id,
        fresh=True,
        sender=inbound.sender,
        source=inbound.channel,
        reply_channel=inbound.channel,
        reply_channel_id=inbound.channel_id,
        reply_thread=entry.reply_thread(inbound),
        message_id=message.id,
        message_ref=inbound.external_id,
    )
    return Stored(message, True, turn, follow_up=running)


@dataclass(eq=False)  # a service: identity, not value
class Inbox:
    """`accept(inbound)`: what every channel calls with a message it received."""

    db: Db
    directory: Directory
    owner: str | None
    run_command: RunCommand
    turn_queued: Callable[[TurnRow], None]
    metrics: InboundMetrics = field(default_factory=InboundMetrics)
    # Channels no Group is bound to, each reported once (bounded).
    _unknown_logged: LogOnce[tuple[str, str]] = field(default_factory=LogOnce, init=False)

    async def accept(self, inbound: Inbound) -> Accepted:
        try:
            accepted = await self._accept(inbound)
        except Exception:
            self.metrics.accepted(inbound.channel, "error")
            raise
        self.metrics.accepted(inbound.channel, accepted.outcome.value)
        return accepted

    async def _accept(self, inbound: Inbound) -> Accepted:
        entry = self.directory.lookup(inbound.channel, inbound.channel_id)
        decision = None
        if entry is not None:
            agent_thread = False
            if inbound.thread and not (inbound.mentioned or inbound.direct) and entry.spec.trigger.mode == "mention":
                agent_thread = await self.db.call(
                    turn_store.answers_thread, entry.namespace, entry.name, inbound.channel_id, inbound.thread
                )
            decision = decide(entry, inbound, self.owner, agent_thread=agent_thread)
        stored = await self.db.call(store_inbound, inbound, entry, decision)
        if not stored.created:
            log.info("duplicate message ignored", key=inbound.dedupe_key)
            return Accepted(
                Outcome.DUPLICATE,
                stored.message.namespace,
                stored.message.group,
                turn_id=stored.message.turn_id,
                message_id=stored.message.id,
            )
        if entry is None:
            channel = (inbound.channel, inbound.channel_id)
            if self._unknown_logged.first(channel):  # a busy channel must not flood the log
                log.info("message from a channel no Group is bound to; ignored", channel=f"{channel[0]}:{channel[1]}")
            return Accepted(Outcome.IGNORED, message_id=stored.message.id, reason="no Group is bound to this channel")
        assert decision is not None
        ns, group = entry.namespace, entry.name
        if decision.action == "ignore":
            log.debug("message not for the agent", namespace=ns, group=group, reason=decision.reason)
            return Accepted(Outcome.IGNORED, ns, group, message_id=stored.message.id, reason=decision.reason)
        if decision.action == "command":
            assert decision.command is not None
            reply = await self.run_command(entry, inbound, decision.command, decision.argument)
            return Accepted(Outcome.COMMAND, ns, group, message_id=stored.message.id, reply=reply)
        turn = stored.turn
        assert turn is not None
        self.turn_queued(turn)
        return Accepted(
            Outcome.FOLLOW_UP if stored.follow_up else Outcome.QUEUED,
            ns,
            group,
            turn_id=turn.id,
            message_id=stored.message.id,
        )
