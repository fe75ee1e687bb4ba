"""Buttons clicked in Slack: a `block_actions` payload → the gateway's decision. Approve / Deny of
an approval request, and the options of an agent's question (ask_user).

The payload comes over Socket Mode (an `interactive` envelope) or over HTTP (a signed form POST with
a `payload=<json>` field, to the same /slack/events URL); bolt acknowledges it at once and the
decision is made in the background, so Slack's 3-second limit is never missed. A decision taken
needs no answer here: the gateway rewrites the approval's ledger row, and delivery updates the
message in place (its buttons replaced by the outcome). A refusal (not an approver, decided
already, unknown id) is told to the person who clicked only, as an ephemeral message."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pynchy.gateway.approvalview import ACTION_APPROVE, ACTION_DENY
from pynchy.gateway.channels.base import DecisionReply
from pynchy.gateway.questionview import ACTION_PATTERN as QUESTION_PATTERN
from pynchy.gateway.slack.errors import describe
from pynchy.gateway.slack.mrkdwn import to_mrkdwn
from pynchy.logs import get_logger

log = get_logger(__name__)

Decide = Callable[[str, bool, str], Awaitable[DecisionReply]]  # (approval id, approve, sender)
Answer = Callable[[str, int, int, str], Awaitable[DecisionReply]]  # (question id, question, option, sender)
Ephemeral = Callable[[str, str, str, str | None], Awaitable[object]]  # (channel, user, text, thread ts)

FAILED_REPLY = "Your decision on `{id}` could not be recorded just now; please try again."


@dataclass(frozen=True)
class Click:
    """One Approve / Deny button pressed by a person."""

    approval_id: str
    approve: bool
    user_id: str
    channel_id: str
    message_ts: str | None
    thread_ts: str | None  # the thread the message is in (None at top level)
    option: tuple[int, int] | None = None  # a question's button: (question index, option index)

    @property
    def sender(self) -> str:
        return f"slack:{self.user_id}"


def parse_click(body: dict[str, Any]) -> Click | str:
    """The click in a block_actions payload, or why it cannot be one (for the log)."""
    actions = body.get("actions")
    action = actions[0] if isinstance(actions, list) and actions and isinstance(actions[0], dict) else None
    if action is None:
        return "no action"
    action_id = action.get("action_id")
    question = re.match(QUESTION_PATTERN, action_id) if isinstance(action_id, str) else None
    if action_id not in (ACTION_APPROVE, ACTION_DENY) and question is None:
        return f"unknown action {action_id!r}"
    approval_id = action.get("value")
    container = _dict(body.get("container"))
    message = _dict(body.get("message"))
    user_id = _id(body.get("user"))
    channel_id = _id(body.get("channel")) or _str(container.get("channel_id"))
    if not isinstance(approval_id, str) or not approval_id:
        return "no approval id"
    if not user_id:
        return "no user"
    if not channel_id:
        return "no channel"
    ts = _str(message.get("ts")) or _str(container.get("message_ts"))
    thread = _str(message.get("thread_ts"))
    return Click(
        approval_id=approval_id,
        approve=action_id == ACTION_APPROVE,
        user_id=user_id,
        channel_id=channel_id,
        message_ts=ts,
        # A thread's parent carries its own ts as thread_ts: it is not *in* a thread.
        thread_ts=thread if thread and thread != ts else None,
        option=(int(question.group(1)), int(question.group(2))) if question else None,
    )


async def answer_click(click: Click, decide: Decide, ephemeral: Ephemeral, answer: Answer | None = None) -> None:
    """Decide (or answer the question); tell the person (only them) when it was refused or failed. Never raises."""
    try:
        if click.option is not None:
            if answer is None:
                raise RuntimeError("this channel takes no answers to questions")
            reply = await answer(click.approval_id, click.option[0], click.option[1], click.sender)
        else:
            reply = await decide(click.approval_id, click.approve, click.sender)
    except Exception as exc:
        log.warning(
            "slack approval button failed",
            approval=click.approval_id,
            user=click.user_id,
            approve=click.approve,
            error=repr(exc),
        )
        await _tell(click, FAILED_REPLY.format(id=click.approval_id), ephemeral)
        return
    log.info(
        "slack approval button",
        approval=click.approval_id,
        user=click.user_id,
        approve=click.approve,
        decided=reply.decided,
        channel=click.channel_id,
        message=click.message_ts,
    )
    if not reply.decided:
        await _tell(click, reply.text, ephemeral)


async def _tell(click: Click, text: str, ephemeral: Ephemeral) -> None:
    try:
        await ephemeral(click.channel_id, click.user_id, to_mrkdwn(text) or text, click.thread_ts)
    except Exception as exc:
        log.warning(
            "slack ephemeral reply not posted",
            approval=click.approval_id,
            user=click.user_id,
            channel=click.channel_id,
            error=describe(exc),
        )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _id(value: Any) -> str | None:
    return _str(value.get("id")) if isinstance(value, dict) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
