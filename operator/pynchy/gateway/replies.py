"""A turn's result and its reply in the ledger, written in one transaction.

If the process dies right after, the reply is already in the ledger and the delivery loop sends it
on start-up; it is never lost between "the agent answered" and "the channel has it"."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.orm import Session

from pynchy.gateway.channels.text import split_message
from pynchy.gateway.routing import ChannelKey
from pynchy.store import outbound
from pynchy.store import turns as turn_store
from pynchy.store.models import OutboundRow, TurnRow

DEFAULT_LIMIT = 3500  # characters per message for a channel that did not say


def reply_rows(
    session: Session, turn: TurnRow, text: str, is_error: bool, limits: Mapping[str, int]
) -> list[OutboundRow]:
    parts = split_message(text, limits.get(turn.reply_channel or "", DEFAULT_LIMIT))
    return outbound.add_reply(session, turn, parts, is_error=is_error)


def finish_turn(
    session: Session,
    turn_id: str,
    run: str,
    text: str,
    is_error: bool,
    *,
    deliver: bool,
    fallback: ChannelKey | None,
    limits: Mapping[str, int],
) -> tuple[TurnRow | None, list[OutboundRow]]:
    """Record the result; put the reply in the ledger. A run's own prompt (a schedule's) has no
    channel of its own: its reply goes to the Group's first channel (`fallback`) when `deliver`."""
    if is_error and not text.strip():
        text = "the agent failed without saying why"  # an error is never silent (nor a placeholder left)
    row = turn_store.finish(session, turn_id, run, text, is_error)
    if row is None or not text:
        return row, []
    if not deliver:
        return row, []
    if row.reply_channel is None and row.run is not None and fallback is not None:
        row.reply_channel, row.reply_channel_id = fallback
    return row, reply_rows(session, row, text, is_error, limits)


def fail_turns(
    session: Session, turns: list[TurnRow], limits: Mapping[str, int], fallback: ChannelKey | None
) -> list[OutboundRow]:
    """Replies for turns that failed without an answer from the agent (the run died or timed out),
    so the person who asked always hears that it did not work."""
    rows: list[OutboundRow] = []
    for turn in turns:
        merged = session.merge(turn)
        if merged.reply_channel is None and merged.run is not None and fallback is not None:
            merged.reply_channel, merged.reply_channel_id = fallback
        rows += reply_rows(session, merged, merged.reply or "the agent stopped before answering", True, limits)
    return rows
