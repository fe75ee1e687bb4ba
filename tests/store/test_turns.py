"""The turn queue on SQLite and PostgreSQL: order, claims, results, requeue, and what happens when
transactions overlap."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from pynchy.store import turns
from pynchy.store.models import TurnRow
from store.helpers import as_utc, blocked_or_done, run_threads

NS, GROUP = "team", "main"


def test_turns_are_claimed_in_order_and_finished(tx: Callable[..., Any]) -> None:
    first = tx(turns.enqueue, NS, GROUP, "one", sender="ann")
    second = tx(turns.enqueue, NS, GROUP, "two")
    assert second.seq > first.seq
    assert tx(turns.has_queued, NS, GROUP) is True

    claimed = tx(turns.claim_next, NS, GROUP, "run-1", bound_only=False)
    assert (claimed.id, claimed.state, claimed.delivered_to, claimed.attempts) == (first.id, "delivered", "run-1", 1)
    done = tx(turns.finish, first.id, "run-1", "hello", False)
    assert done is not None
    row = tx(turns.get, first.id)
    assert (row.state, row.reply, row.is_error) == ("done", "hello", False)
    assert row.is_error is False  # a bool on both databases, not 0

    assert tx(turns.claim_next, NS, GROUP, "run-1", bound_only=False).id == second.id
    assert tx(turns.finish, second.id, "run-2", "not mine", False) is None
    assert tx(turns.finish, second.id, "run-1", "boom", True).state == "failed"
    assert tx(turns.get, second.id).is_error is True
    assert tx(turns.has_queued, NS, GROUP) is False
    assert tx(turns.claim_next, NS, GROUP, "run-1", bound_only=False) is None


def test_enqueue_is_idempotent_per_turn_id(tx: Callable[..., Any]) -> None:
    a = tx(turns.enqueue, NS, GROUP, "hi", turn_id="t-1", reply_channel="slack", reply_channel_id="C1")
    b = tx(turns.enqueue, NS, GROUP, "hi again", turn_id="t-1")
    assert (b.id, b.seq, b.prompt, b.reply_channel_id) == (a.id, a.seq, "hi", "C1")


def test_bound_turns_go_to_their_run_only(tx: Callable[..., Any]) -> None:
    open_turn = tx(turns.enqueue, NS, GROUP, "anyone")
    bound = tx(turns.enqueue, NS, GROUP, "scheduled", run="sched-1")
    assert tx(turns.claim_next, NS, GROUP, "other", bound_only=True) is None
    assert tx(turns.claim_next, NS, GROUP, "sched-1", bound_only=True).id == bound.id
    assert tx(turns.claim_next, NS, GROUP, "other", bound_only=False).id == open_turn.id


def test_unfinished_turns_are_requeued_then_failed(tx: Callable[..., Any]) -> None:
    turn = tx(turns.enqueue, NS, GROUP, "flaky")
    for attempt in range(1, turns.MAX_ATTEMPTS + 1):
        assert tx(turns.claim_next, NS, GROUP, f"run-{attempt}", bound_only=False).attempts == attempt
        tx(turns.requeue_unfinished, NS, f"run-{attempt}")
    row = tx(turns.get, turn.id)
    assert (row.state, row.is_error) == ("failed", True)
    assert "stopped before answering" in row.reply


def test_a_queued_turn_fails_once_enough_runs_after_it_could_not_start(tx: Callable[..., Any]) -> None:
    turn = tx(turns.enqueue, NS, GROUP, "hello")
    queued_at = tx(turns.get, turn.id).created_at
    before = queued_at.replace(microsecond=0) - timedelta(seconds=5)  # a failed run older than the turn
    after = [queued_at.replace(microsecond=0) + timedelta(seconds=i) for i in range(turns.MAX_ATTEMPTS)]
    # Fewer failed starts than attempts (old failures do not count): the turn stays queued.
    assert tx(turns.fail_unstartable, NS, GROUP, [before, *after[:-1]], "clone failed") == []
    assert tx(turns.get, turn.id).state == "queued"
    [failed] = tx(turns.fail_unstartable, NS, GROUP, [before, *after], "clone failed")
    assert failed.id == turn.id
    row = tx(turns.get, turn.id)
    assert (row.state, row.is_error) == ("failed", True)
    assert row.reply == f"the agent could not start ({turns.MAX_ATTEMPTS} attempts): clone failed"
    # Seeing the same runs again (a gateway restart) changes nothing.
    assert tx(turns.fail_unstartable, NS, GROUP, [before, *after], "clone failed") == []


def test_times_are_stored_as_instants(tx: Callable[..., Any]) -> None:
    before = datetime.now(UTC)
    turn = tx(turns.enqueue, NS, GROUP, "when")
    tx(turns.claim_next, NS, GROUP, "run-1", bound_only=False)
    tx(turns.finish, turn.id, "run-1", "now", False)
    after = datetime.now(UTC)
    row = tx(turns.get, turn.id)  # a new session: the values come from the database
    for moment in (row.created_at, row.delivered_at, row.finished_at):
        assert before <= as_utc(moment) <= after
    assert as_utc(row.created_at) <= as_utc(row.delivered_at) <= as_utc(row.finished_at)


def test_claims_at_once_never_share_a_turn(tx: Callable[..., Any]) -> None:
    queued = {tx(turns.enqueue, NS, GROUP, f"turn {i}").id for i in range(24)}

    def drain(i: int) -> list[str]:
        got = []
        while (row := tx(turns.claim_next, NS, GROUP, f"run-{i}", bound_only=False)) is not None:
            got.append(row.id)
        return got

    claimed = [turn_id for got in run_threads(6, drain) for turn_id in got]
    assert sorted(claimed) == sorted(queued)  # every turn once, none twice


def test_claims_at_once_each_get_a_turn_when_there_are_enough(tx: Callable[..., Any]) -> None:
    """None only when nothing is queued: a claim never comes back empty because others hold the
    oldest turns (PostgreSQL skips rows locked by concurrent claims)."""
    queued = {tx(turns.enqueue, NS, GROUP, f"turn {i}").id for i in range(8)}
    claimed = run_threads(8, lambda i: tx(turns.claim_next, NS, GROUP, f"run-{i}", bound_only=False))
    assert None not in claimed
    assert {row.id for row in claimed} == queued


def test_a_claim_beside_an_uncommitted_claim_takes_the_next_turn(
    sessions: sessionmaker[Session], engine: Engine, tx
) -> None:
    first = tx(turns.enqueue, NS, GROUP, "one")
    second = tx(turns.enqueue, NS, GROUP, "two")
    got: list[TurnRow | None] = []
    with sessions() as a:
        assert turns.claim_next(a, NS, GROUP, "run-a", bound_only=False).id == first.id  # not committed yet
        other = threading.Thread(target=lambda: got.append(tx(turns.claim_next, NS, GROUP, "run-b", bound_only=False)))
        other.start()
        blocked_or_done(engine, other)
        a.commit()
    other.join()
    assert got[0] is not None
    assert got[0].id == second.id
    assert tx(turns.get, first.id).delivered_to == "run-a"


def test_enqueues_at_once_get_distinct_order(tx: Callable[..., Any]) -> None:
    rows = run_threads(8, lambda i: [tx(turns.enqueue, NS, GROUP, f"{i}.{j}") for j in range(5)])
    seqs = [row.seq for batch in rows for row in batch]
    assert len(set(seqs)) == len(seqs) == 40


def test_an_enqueue_waits_for_an_uncommitted_one(sessions: sessionmaker[Session], engine: Engine, tx) -> None:
    """max(seq) + 1 read by two transactions at once would give two turns one place in the queue."""
    got: list[TurnRow] = []
    with sessions() as a:
        mine = turns.enqueue(a, NS, GROUP, "first")
        other = threading.Thread(target=lambda: got.append(tx(turns.enqueue, NS, GROUP, "second")))
        other.start()
        blocked_or_done(engine, other)
        a.commit()
    other.join()
    assert got[0].seq > mine.seq


def test_a_result_and_a_requeue_at_once_keep_the_result(
    sessions: sessionmaker[Session], engine: Engine, tx: Callable[..., Any]
) -> None:
    """The run answered while the gateway saw it end: the answer stands, the turn is not queued again."""
    turn = tx(turns.enqueue, NS, GROUP, "q")
    tx(turns.claim_next, NS, GROUP, "run-1", bound_only=False)
    requeued: list[list[TurnRow]] = []
    with sessions() as a:
        assert turns.finish(a, turn.id, "run-1", "the answer", False) is not None  # not committed yet
        other = threading.Thread(target=lambda: requeued.append(tx(turns.requeue_unfinished, NS, "run-1")))
        other.start()
        blocked_or_done(engine, other)
        a.commit()
    other.join()
    assert requeued == [[]]
    row = tx(turns.get, turn.id)
    assert (row.state, row.reply) == ("done", "the answer")


def test_a_requeue_and_a_late_result_at_once_do_not_finish_a_requeued_turn(
    sessions: sessionmaker[Session], engine: Engine, tx: Callable[..., Any]
) -> None:
    """The gateway saw the run end first: its late answer is refused, the turn is queued once more."""
    turn = tx(turns.enqueue, NS, GROUP, "q")
    tx(turns.claim_next, NS, GROUP, "run-1", bound_only=False)
    finished: list[TurnRow | None] = []
    with sessions() as a:
        assert [r.id for r in turns.requeue_unfinished(a, NS, "run-1")] == [turn.id]  # not committed yet
        other = threading.Thread(target=lambda: finished.append(tx(turns.finish, turn.id, "run-1", "late", False)))
        other.start()
        blocked_or_done(engine, other)
        a.commit()
    other.join()
    assert finished == [None]
    row = tx(turns.get, turn.id)
    assert (row.state, row.reply, row.delivered_to) == ("queued", None, None)
