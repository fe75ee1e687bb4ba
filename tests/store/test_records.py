"""Usage, memories, audit and per-Group session state on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pynchy.store import records
from pynchy.store.models import UsageRow
from store.helpers import run_threads

NS, GROUP = "team", "main"


def usage(run: str, source: str, tokens_in: int, tokens_out: int, group: str = GROUP) -> UsageRow:
    return UsageRow(namespace=NS, group=group, run=run, source=source, input_tokens=tokens_in, output_tokens=tokens_out)


def test_usage_is_summed_per_group_and_source(tx: Callable[..., Any]) -> None:
    assert tx(records.group_usage, NS, GROUP) == {"input_tokens": 0, "output_tokens": 0, "calls": 0}
    tx(records.record_usage, usage("r1", "proxy", 10, 3))
    tx(records.record_usage, usage("r1", "proxy", 5, 2))
    tx(records.record_usage, usage("r1", "runner", 100, 100))
    tx(records.record_usage, usage("r2", "proxy", 1, 1, group="other"))
    totals = tx(records.group_usage, NS, GROUP)
    assert totals == {"input_tokens": 15, "output_tokens": 5, "calls": 2}
    assert all(type(v) is int for v in totals.values())  # not Decimal from PostgreSQL's sum()
    assert tx(records.group_usage, NS, GROUP, "runner")["input_tokens"] == 100


def test_memories_are_saved_recalled_and_forgotten(tx: Callable[..., Any]) -> None:
    assert tx(records.save_memory, NS, GROUP, "Coffee", "Ann takes it BLACK") is False
    assert tx(records.save_memory, NS, GROUP, "tea", "Bob: green tea") is False
    assert tx(records.save_memory, NS, GROUP, "coffee", "lower-case key is another key") is False
    assert tx(records.save_memory, NS, GROUP, "tea", "Bob: no tea after 4pm") is True
    assert tx(records.save_memory, NS, "other", "tea", "another group") is False

    # Case-insensitive on both databases (PostgreSQL's LIKE is not).
    assert [m.key for m in tx(records.recall_memories, NS, GROUP, "black")] == ["Coffee"]
    assert {m.key for m in tx(records.recall_memories, NS, GROUP, "COFFEE")} == {"Coffee", "coffee"}
    assert [m.content for m in tx(records.recall_memories, NS, GROUP, "tea 4PM")] == ["Bob: no tea after 4pm"]
    assert tx(records.recall_memories, NS, GROUP)[0].key == "tea"  # the latest change first
    assert tx(records.forget_memory, NS, GROUP, "tea") is True
    assert tx(records.forget_memory, NS, GROUP, "tea") is False
    assert {m.key for m in tx(records.recall_memories, NS, GROUP)} == {"Coffee", "coffee"}


def test_the_same_memory_saved_at_once_is_one_row(tx: Callable[..., Any]) -> None:
    existed = run_threads(6, lambda i: tx(records.save_memory, NS, GROUP, "k", f"v{i}"))
    assert existed.count(False) == 1
    rows = tx(records.recall_memories, NS, GROUP)
    assert len(rows) == 1
    assert rows[0].content.startswith("v")


def test_audit_log_keeps_booleans_and_order(tx: Callable[..., Any]) -> None:
    tx(records.audit, namespace=NS, group=GROUP, run="r1", action="send_message", allowed=True)
    tx(
        records.audit,
        namespace=NS,
        group=GROUP,
        run="r1",
        action="schedule_task",
        allowed=False,
        target_group="admin",
        detail="x" * 5000,
    )
    tx(records.audit, namespace=NS, group="other", run="r2", action="send_message", allowed=True)
    log = tx(records.audit_log, NS, GROUP)
    assert [(e.action, e.allowed, e.target_group) for e in log] == [
        ("send_message", True, None),
        ("schedule_task", False, "admin"),
    ]
    assert log[1].allowed is False
    assert len(log[1].detail) == 4000
    assert len(tx(records.audit_log, NS)) == 3


def test_group_session_is_created_once(tx: Callable[..., Any]) -> None:
    row = tx(records.group_session, NS, GROUP)
    assert (row.session_id, row.reset_pending) == (None, False)

    def set_session(session: Any) -> None:
        records.group_session(session, NS, GROUP).session_id = "s-1"

    tx(set_session)
    assert tx(records.group_session, NS, GROUP).session_id == "s-1"


def test_group_session_asked_for_at_once_is_one_row(tx: Callable[..., Any]) -> None:
    rows = run_threads(6, lambda i: tx(records.group_session, NS, GROUP))
    assert {(r.namespace, r.group) for r in rows} == {(NS, GROUP)}
