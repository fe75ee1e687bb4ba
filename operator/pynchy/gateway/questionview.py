"""How an agent's questions (ask_user) and their answers look in a channel: text for every
channel, Block Kit buttons for Slack, data for `pynchy chat`. Pure functions."""

from __future__ import annotations

import json
from typing import Any

from pynchy.store.models import QuestionRow
from pynchy.store.questions import ANSWERED, EXPIRED

# Slack: one button per option, action id pynchy_question_<question>_<option>, value the question id.
ACTION_PREFIX = "pynchy_question_"
ACTION_PATTERN = r"^pynchy_question_(\d)_(\d)$"


def questions(row: QuestionRow) -> list[dict[str, Any]]:
    value = json.loads(row.questions)
    assert isinstance(value, list)
    return value


def answers(row: QuestionRow) -> list[str | None]:
    value = json.loads(row.answers)
    assert isinstance(value, list)
    return value


def request_text(row: QuestionRow) -> str:
    lines = [f"The agent asks [{row.id}]:"]
    for qi, q in enumerate(questions(row), 1):
        lines.append(f"{qi}. {q['question']}")
        lines += [f"   {oi}) {option}" for oi, option in enumerate(q["options"], 1)]
        if q.get("allowFreeText"):
            lines.append("   (or answer in your own words)")
    lines.append(f"Reply `answer {row.id} <number>` (or your words), one question at a time, in order.")
    return "\n".join(lines)


def answered_lines(row: QuestionRow) -> list[str]:
    return [
        f"{q['question']} → {a if a is not None else '(no answer)'}"
        for q, a in zip(questions(row), answers(row), strict=True)
    ]


def outcome_text(row: QuestionRow) -> str:
    if row.state == EXPIRED:
        return f"[{row.id}] Nobody answered in time; the agent was told."
    return f"[{row.id}] Answered:\n" + "\n".join(answered_lines(row))


def tool_result_text(row: QuestionRow, timeout: int) -> str:
    if row.state == ANSWERED:
        return "The user answered:\n" + "\n".join(f"{i}. {line}" for i, line in enumerate(answered_lines(row), 1))
    got = [line for line, a in zip(answered_lines(row), answers(row), strict=True) if a is not None]
    text = f"The user did not answer within {timeout} seconds. Go on without the answers, or ask again later."
    return text + ("\nAnswered before the deadline:\n" + "\n".join(got) if got else "")


def request_data(row: QuestionRow) -> dict[str, Any]:
    return {"question": {"id": row.id, "questions": questions(row)}}


def request_blocks(row: QuestionRow) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [_section(f":question: *The agent asks* `{row.id}`")]
    for qi, (q, a) in enumerate(zip(questions(row), answers(row), strict=True)):
        blocks.append(_section(f"*{qi + 1}. {q['question']}*"))
        if a is not None:
            blocks.append(_context(f":white_check_mark: {a}"))
            continue
        buttons = [
            {
                "type": "button",
                "text": {"type": "plain_text", "text": option[:75]},
                "action_id": f"{ACTION_PREFIX}{qi}_{oi}",
                "value": row.id,
            }
            for oi, option in enumerate(q["options"])
        ]
        blocks.append({"type": "actions", "block_id": f"question-{row.id}-{qi}", "elements": buttons})
        if q.get("allowFreeText"):
            blocks.append(_context(f"Or reply `answer {row.id} <your words>` in this thread."))
    return blocks


def outcome_blocks(row: QuestionRow) -> list[dict[str, Any]]:
    text = outcome_text(row)
    return [_section(f":question: *The agent asked* `{row.id}`"), _context(text.split("\n", 1)[-1] or text)]


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:3000]}]}
