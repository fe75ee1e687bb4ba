"""Approvals through the run API: the runner's preflight (hook) and Pynchy's tools under the Group's
tool policy, decided by text commands' code path, expiring, surviving a new gateway (same store)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from pynchy.gateway import approvalview as view
from pynchy.gateway.approvals import Approvals
from pynchy.store import approvals as store
from pynchy.store import outbound, records
from pynchy.store.models import ApprovalRow
from pynchy_agent.protocol import RUN_API_PREFIX
from test_gateway_http import Parts, bearer, run_obj, serve, token

POLICY = {
    "agent": {
        "toolPolicy": {
            "rules": [
                {"tools": ["Bash", "pynchy/save_memory"], "action": "ask"},
                {"tools": ["WebFetch", "pynchy/forget_memory"], "action": "deny"},
            ],
            "approvalTimeoutSeconds": 30,
        }
    }
}


async def permission(client: TestClient[Any, Any], tool: str, use_id: str, wait: float = 0, **input: Any) -> Any:
    r = await client.post(
        f"{RUN_API_PREFIX}/permissions?wait={wait}",
        json={"tool": tool, "input": input, "toolUseId": use_id},
        headers=bearer(token("r1")),
    )
    assert r.status == 200, await r.text()
    return await r.json()


async def until(predicate: Any, what: str) -> Any:
    for _ in range(500):
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_policy_allows_denies_and_asks_before_a_tool_runs(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], parts: Parts) -> None:
        parts.index.on_event("ADDED", run_obj("r1"))
        assert (await permission(client, "Read", "u1"))["decision"] == "allow"
        denied = await permission(client, "WebFetch", "u2", url="https://example.com")
        assert denied["decision"] == "deny"
        assert "rule 2 of spec.agent.toolPolicy" in denied["reason"]

        first = await permission(client, "Bash", "u3", command="rm -rf build")
        assert first["decision"] == "pending"
        again = await permission(client, "Bash", "u3", command="rm -rf build")  # a retry: the same request
        assert again["approval"] == first["approval"]
        row = await parts.db.call(store.get, first["approval"])
        assert (row.tool, row.state, row.summary) == ("Bash", "pending", "rm -rf build")
        ledger = await parts.db.call(outbound.by_key, f"approval:{row.id}")
        assert f"approve {row.id}" in ledger.text

        waiting = asyncio.ensure_future(permission(client, "Bash", "u3", wait=30, command="rm -rf build"))
        stranger = await parts.approvals.decide(row.id, True, "slack:U0STRANGER1")
        assert not stranger.decided
        assert "not one" in stranger.text
        yes = await parts.approvals.decide(row.id, True, "owner")
        assert yes.decided
        assert (await waiting)["decision"] == "allow"  # the long-poll woke on the decision
        late = await parts.approvals.decide(row.id, False, "owner")
        assert not late.decided
        assert "already decided" in late.text

        audit = await parts.db.call(records.audit_log, "home", "demo")
        kinds = [(a.action, json.loads(a.detail).get("decision")) for a in audit]
        assert ("policy:WebFetch", "deny") in kinds
        assert ("approval:Bash", "ask") in kinds
        assert ("approval:Bash", "refused") in kinds
        assert ("approval:Bash", "approved") in kinds

    serve(tmp_path, scenario, spec=POLICY)


def test_a_pynchy_tool_under_ask_runs_once_per_approval_and_a_denied_one_never(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], parts: Parts) -> None:
        parts.index.on_event("ADDED", run_obj("r1"))
        args = {"key": "colour", "content": "blue"}
        pre = await permission(client, "mcp__pynchy__save_memory", "u1", **args)
        assert pre["decision"] == "pending"
        await parts.approvals.decide(pre["approval"], True, "owner")
        assert (await permission(client, "mcp__pynchy__save_memory", "u1", **args))["decision"] == "allow"
        call = await client.post(
            f"{RUN_API_PREFIX}/tools/save_memory", json={"arguments": args}, headers=bearer(token("r1"))
        )
        assert call.status == 200, await call.text()
        assert (await parts.db.call(store.get, pre["approval"])).consumed

        # The same call again, with no approval left: the gateway asks itself and the call waits.
        second = asyncio.ensure_future(
            client.post(f"{RUN_API_PREFIX}/tools/save_memory", json={"arguments": args}, headers=bearer(token("r1")))
        )

        async def asked() -> Any:
            rows = await parts.approvals.pending("home", "demo")
            return rows[0] if rows else None

        row = await until(asked, "the gateway's own approval request")
        assert row.key.startswith("call:")
        await parts.approvals.decide(row.id, False, "owner")
        refused = await second
        assert refused.status == 403
        assert "denied by owner" in (await refused.json())["error"]

        forbidden = await client.post(
            f"{RUN_API_PREFIX}/tools/forget_memory", json={"arguments": {"key": "colour"}}, headers=bearer(token("r1"))
        )
        assert forbidden.status == 403
        assert "tool policy denies pynchy/forget_memory" in (await forbidden.json())["error"]

    serve(tmp_path, scenario, spec=POLICY)


def test_nobody_deciding_denies_and_says_so_where_it_was_asked(tmp_path: Path) -> None:
    now = [datetime(2026, 12, 1, 12, 0, tzinfo=UTC)]

    async def scenario(client: TestClient[Any, Any], parts: Parts) -> None:
        parts.index.on_event("ADDED", run_obj("r1"))
        parts.approvals.clock = lambda: now[0]
        pre = await permission(client, "Bash", "u1", command="make deploy")
        now[0] += timedelta(seconds=31)
        await parts.approvals.sweep()
        answer = await permission(client, "Bash", "u1", command="make deploy")
        assert answer["decision"] == "deny"
        assert "within 30 seconds" in answer["reason"]
        row = await parts.db.call(store.get, pre["approval"])
        assert (row.state, row.decided_by, row.reported) == ("expired", "timeout", True)
        outcome = await parts.db.call(outbound.by_key, f"approval:{row.id}:outcome")
        assert "nobody decided in time" in outcome.text  # the local channel gets the outcome as a message

    serve(tmp_path, scenario, spec=POLICY)


def test_a_request_outlives_its_gateway(tmp_path: Path) -> None:
    """The store holds everything: a new Approvals (a restarted gateway) decides an old request and
    the runner, asking again with the same tool use id, gets the decision."""

    async def scenario(client: TestClient[Any, Any], parts: Parts) -> None:
        parts.index.on_event("ADDED", run_obj("r1"))
        pre = await permission(client, "Bash", "u9", command="ls")
        fresh = Approvals(parts.db, parts.approvals.delivery, parts.directory, None, lambda ns, run: False)
        assert (await fresh.decide(pre["approval"], True, "owner")).decided
        assert (await permission(client, "Bash", "u9", command="ls"))["decision"] == "allow"

    serve(tmp_path, scenario, spec=POLICY)


def test_slack_requests_carry_buttons_that_the_outcome_replaces() -> None:
    row = ApprovalRow(
        id="abc234", tool="github/create_issue", summary='{"title": "x"}', state="pending", decided_by=None
    )
    buttons = view.request_blocks(row)[-1]["elements"]
    assert [(b["action_id"], b["value"]) for b in buttons] == [
        (view.ACTION_APPROVE, "abc234"),
        (view.ACTION_DENY, "abc234"),
    ]
    row.state, row.decided_by = "approved", "slack:U0123ABCDE"
    blocks = view.outcome_blocks(row, run_ended=True)
    assert all(b["type"] != "actions" for b in blocks)
    assert "Approved by <@U0123ABCDE>" in blocks[-1]["elements"][0]["text"]
    assert "already ended" in view.outcome_text(row, run_ended=True)


ASK = {
    "questions": [
        {"question": "Which colour?", "options": ["red", "blue"]},
        {"question": "How big?", "options": ["small", "large"], "allowFreeText": True},
    ]
}


def test_ask_user_waits_for_every_answer_and_a_retry_finds_the_same_question(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], parts: Parts) -> None:
        parts.index.on_event("ADDED", run_obj("r1"))
        body = {"arguments": ASK, "callId": "call-1"}
        first = asyncio.ensure_future(
            client.post(f"{RUN_API_PREFIX}/tools/ask_user", json=body, headers=bearer(token("r1")))
        )

        async def asked() -> Any:
            rows = await parts.questions.pending("home", "demo")
            return rows[0] if rows else None

        row = await until(asked, "the question")
        ledger = await parts.db.call(outbound.by_key, f"question:{row.id}")
        assert "1) red" in ledger.text
        assert f"answer {row.id}" in ledger.text
        # A retry of the call (a gateway restart in between) waits on the same question.
        second = asyncio.ensure_future(
            client.post(f"{RUN_API_PREFIX}/tools/ask_user", json=body, headers=bearer(token("r1")))
        )
        assert not (await parts.questions.answer(row.id, "owner", choice=5)).decided  # no such option
        assert not (await parts.questions.answer(row.id, "slack:U0STRANGER1", choice=0)).decided
        assert (await parts.questions.answer(row.id, "owner", text="2")).decided  # 'blue', by number
        assert not (await parts.questions.answer(row.id, "owner", index=0, choice=0)).decided  # answered
        assert (await parts.questions.answer(row.id, "owner", text="as big as a house")).decided
        for response in (await first, await second):
            assert response.status == 200, await response.text()
            result = await response.json()
            assert "Which colour? → blue" in result["text"]
            assert "How big? → as big as a house" in result["text"]
            assert result["data"]["question"] == row.id
        assert len(await parts.db.call(_all_questions)) == 1

    serve(tmp_path, scenario)


def test_ask_user_unanswered_comes_back_as_a_clear_result(tmp_path: Path) -> None:
    now = [datetime(2026, 12, 1, 12, 0, tzinfo=UTC)]

    async def scenario(client: TestClient[Any, Any], parts: Parts) -> None:
        parts.index.on_event("ADDED", run_obj("r1"))
        parts.questions.clock = lambda: now[0]
        call = asyncio.ensure_future(
            client.post(
                f"{RUN_API_PREFIX}/tools/ask_user", json={"arguments": ASK, "callId": "c"}, headers=bearer(token("r1"))
            )
        )

        async def asked() -> Any:
            return await parts.questions.pending("home", "demo")

        [row] = await until(asked, "the question")
        assert (await parts.questions.answer(row.id, "owner", choice=0)).decided
        now[0] += timedelta(seconds=301)
        response = await call
        result = await response.json()
        assert "did not answer within 300 seconds" in result["text"]
        assert "Which colour? → red" in result["text"]  # what was answered still counts
        outcome = await parts.db.call(outbound.by_key, f"question:{row.id}:outcome")
        assert "Nobody answered in time" in outcome.text

    serve(tmp_path, scenario)


def _all_questions(session: Any) -> list[Any]:
    from sqlalchemy import select

    from pynchy.store.models import QuestionRow

    return list(session.scalars(select(QuestionRow)))


def test_a_decision_after_the_run_ended_is_recorded_and_reported(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], parts: Parts) -> None:
        parts.index.on_event("ADDED", run_obj("r1"))
        pre = await permission(client, "Bash", "u1", command="make release")
        parts.index.on_event("DELETED", run_obj("r1"))  # the run is gone before anyone decided
        reply = await parts.approvals.decide(pre["approval"], True, "owner")
        assert reply.decided
        assert "the run that asked had already ended" in reply.text
        outcome = await parts.db.call(outbound.by_key, f"approval:{pre['approval']}:outcome")
        assert "already ended" in outcome.text
        [decided] = [
            json.loads(a.detail)
            for a in await parts.db.call(records.audit_log, "home", "demo")
            if a.action == "approval:Bash" and json.loads(a.detail)["decision"] == "approved"
        ]
        assert decided["runEnded"] is True

    serve(tmp_path, scenario, spec=POLICY)
