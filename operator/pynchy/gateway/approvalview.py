"""How an approval request and its outcome look in a channel: plain text (every channel, and the
fallback of Slack's notifications) and Slack Block Kit with Approve / Deny buttons. Pure functions."""

from __future__ import annotations

from typing import Any

from pynchy.store.approvals import APPROVED, DENIED, EXPIRED
from pynchy.store.models import ApprovalRow

# Slack: the buttons' action ids; each button's value is the approval id.
ACTION_APPROVE = "pynchy_approval_approve"
ACTION_DENY = "pynchy_approval_deny"
ACTION_PATTERN = r"^pynchy_approval_(approve|deny)$"
MAX_SUMMARY_CHARS = 1500


def _who(decided_by: str | None) -> str:
    if not decided_by:
        return "nobody"
    if decided_by.startswith("slack:"):
        return f"<@{decided_by.removeprefix('slack:')}>"
    return decided_by


def _summary(row: ApprovalRow) -> str:
    text = row.summary
    return text if len(text) <= MAX_SUMMARY_CHARS else text[: MAX_SUMMARY_CHARS - 1] + "…"


def request_text(row: ApprovalRow) -> str:
    return (
        f"Approval needed [{row.id}]: the agent wants to use {row.tool}.\n{_summary(row)}\n"
        f"Reply `approve {row.id}` or `deny {row.id}` (denied if nobody decides in time)."
    )


def outcome_line(row: ApprovalRow, *, run_ended: bool = False) -> str:
    if row.state == APPROVED:
        line = f"Approved by {_who(row.decided_by)}"
    elif row.state == DENIED:
        line = f"Denied by {_who(row.decided_by)}"
    elif row.state == EXPIRED:
        line = "Denied: nobody decided in time"
    else:
        line = "Waiting for a decision"
    if run_ended and row.state == APPROVED:
        line += " (the run that asked had already ended; the agent did not get it)"
    return line


def outcome_text(row: ApprovalRow, *, run_ended: bool = False) -> str:
    return f"[{row.id}] {row.tool}: {outcome_line(row, run_ended=run_ended)}."


def request_data(row: ApprovalRow) -> dict[str, Any]:
    """The request as data, for channels that draw it themselves (the local channel's `pynchy chat`)."""
    return {"approval": {"id": row.id, "tool": row.tool}}


def request_blocks(row: ApprovalRow) -> list[dict[str, Any]]:
    return [
        _section(f":lock: *Approval needed* `{row.id}`: the agent wants to use *{row.tool}*"),
        _section("```" + _summary(row).replace("```", "'''") + "```"),
        {
            "type": "actions",
            "block_id": f"approval-{row.id}",
            "elements": [
                _button("Approve", ACTION_APPROVE, row.id, "primary"),
                _button("Deny", ACTION_DENY, row.id, "danger"),
            ],
        },
    ]


def outcome_blocks(row: ApprovalRow, *, run_ended: bool = False) -> list[dict[str, Any]]:
    mark = ":white_check_mark:" if row.state == APPROVED else ":no_entry:"
    return [
        _section(f":lock: *Approval* `{row.id}`: *{row.tool}*"),
        _section("```" + _summary(row).replace("```", "'''") + "```"),
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"{mark} {outcome_line(row, run_ended=run_ended)}"}],
        },
    ]


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def _button(label: str, action_id: str, value: str, style: str) -> dict[str, Any]:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "action_id": action_id,
        "value": value,
        "style": style,
    }
