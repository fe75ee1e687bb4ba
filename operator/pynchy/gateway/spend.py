"""The model proxy's spend guard: prices each metered call, keeps a Group's running totals for its
current day and month, refuses a call once a budget is reached, and posts each budget notice once.

Totals are read from the store the first time a Group calls in a period (so a restarted gateway
continues where it was) and then kept in memory, added to as calls are metered; the check before
a call is a dictionary lookup. A Group without a budget is counted in UTC days (for its status).
Notices go through the outbound ledger with a key per Group, period and kind, so each is posted
once, however many calls and restarts there are.

A metered call is added to the totals at once and its usage row written behind, in batches (one
transaction for however many calls ended meanwhile): the model call's answer never waits for the
store, and `close` writes what is left. A SIGKILL can lose the rows of the last milliseconds, as it
loses a call still streaming.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pynchy.aio import KeyedLocks, TaskSet
from pynchy.api.group import GroupSpec
from pynchy.gateway.budget import Limits, Period, Spent, Verdict, judge, periods
from pynchy.gateway.db import Db
from pynchy.gateway.pricing import Price, cost_usd, tokens_of
from pynchy.gateway.usage import ModelUsage, usage_values
from pynchy.logs import get_logger
from pynchy.store import records

log = get_logger(__name__)

MAX_UNWRITTEN = 10_000
# (key, namespace, group, text) -> True the one time the notice is new (Outbox.post)
Notify = Callable[[str, str, str, str], Awaitable[bool]]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Totals:
    zone: str
    day: Period
    month: Period
    day_spent: Spent
    month_spent: Spent

    def current(self, now: datetime) -> bool:
        return self.day.start <= now < self.day.end and self.month.start <= now < self.month.end


@dataclass(eq=False)  # a service: identity, not value
class SpendGuard:
    db: Db
    prices: Mapping[str, Price]
    notify: Notify
    default: Limits | None = None
    clock: Callable[[], datetime] = _now
    on_usage: Callable[[str, str, str, ModelUsage, float], None] | None = None  # metrics, status
    on_refused: Callable[[str, str], None] | None = None  # metrics
    on_notice: Callable[[str, str, Verdict], None] | None = None  # a notice posted for the first time: Events
    _totals: dict[tuple[str, str], _Totals] = field(default_factory=dict)
    _locks: KeyedLocks[tuple[str, str]] = field(default_factory=KeyedLocks)
    _unwritten: list[dict[str, object]] = field(default_factory=list)
    _writer: TaskSet = field(default_factory=TaskSet)

    def limits(self, spec: GroupSpec | None) -> Limits | None:
        """The Group's own budget, else the gateway's default, else none."""
        if spec is not None and spec.budget is not None:
            return Limits.of(spec.budget)
        return self.default

    async def check(self, namespace: str, group: str, spec: GroupSpec | None) -> Verdict:
        """Before a call leaves: exceeded means refuse (and the notice is posted once)."""
        limits = self.limits(spec)
        if limits is None:
            return Verdict("ok")
        totals = await self._current(namespace, group, limits)
        verdict = judge(limits, (totals.day, totals.day_spent), (totals.month, totals.month_spent))
        if verdict.state == "exceeded":
            if self.on_refused is not None:
                self.on_refused(namespace, group)
            await self._notice(namespace, group, verdict)
        return verdict

    async def record(self, namespace: str, group: str, run: str, usage: ModelUsage, spec: GroupSpec | None) -> float:
        """Price one metered call, store it, add it to the totals; returns its cost in USD."""
        cost = cost_usd(usage, self.prices)
        # The row's time is the guard's clock, the one the totals' periods are cut by.
        row = usage_values(namespace, group, run, "proxy", usage, model=usage.model, cost_usd=cost, at=self.clock())
        limits = self.limits(spec)
        totals = await self._current(namespace, group, limits or Limits())  # before this row
        self._write_behind(row)
        tokens = tokens_of(usage)
        totals.day_spent = Spent(totals.day_spent.usd + cost, totals.day_spent.tokens + tokens)
        totals.month_spent = Spent(totals.month_spent.usd + cost, totals.month_spent.tokens + tokens)
        if self.on_usage is not None:
            self.on_usage(namespace, group, run, usage, cost)
        if limits is None:
            return cost
        verdict = judge(limits, (totals.day, totals.day_spent), (totals.month, totals.month_spent))
        if verdict.state != "ok":
            await self._notice(namespace, group, verdict)
        return cost

    def _write_behind(self, row: dict[str, object]) -> None:
        self._unwritten.append(row)
        if len(self._writer) == 0:
            self._writer.spawn(self._write(), name="usage-writer")

    async def _write(self) -> None:
        while self._unwritten:
            rows, self._unwritten = self._unwritten, []
            try:
                await self.db.call(records.record_usages, rows)
            except Exception:
                # Kept for the next call's write (bounded: a store that stays down loses the oldest).
                log.exception("usage rows not written; kept for the next write", rows=len(rows))
                self._unwritten[:0] = rows
                del self._unwritten[: max(0, len(self._unwritten) - MAX_UNWRITTEN)]
                return

    async def flush(self) -> None:
        """Write every metered call's row now (before the store closes; tests read rows after it)."""
        await self._writer.drain(30)
        if self._unwritten:
            await self._write()

    async def snapshot(self, namespace: str, group: str, spec: GroupSpec | None) -> dict[str, object]:
        """The Group's spend for its status: day, today's and this month's USD, the budget state."""
        limits = self.limits(spec)
        totals = await self._current(namespace, group, limits or Limits())
        state = "none"
        if limits is not None:
            state = judge(limits, (totals.day, totals.day_spent), (totals.month, totals.month_spent)).state
        return {
            "day": totals.day.key,
            "todayUsd": round(totals.day_spent.usd, 4),
            "monthUsd": round(totals.month_spent.usd, 4),
            "budget": state,
        }

    async def _current(self, namespace: str, group: str, limits: Limits) -> _Totals:
        key = (namespace, group)
        now = self.clock()
        totals = self._totals.get(key)
        # The common case, without time-zone arithmetic: the same zone, still inside both periods.
        if totals is not None and totals.zone == limits.time_zone and totals.current(now):
            return totals
        day, month = periods(now, limits.zone)
        async with self._locks(key):
            totals = self._totals.get(key)
            if totals is None or totals.zone != limits.time_zone or not totals.current(now):
                await self.flush()  # rows still to be written count in the totals read back
                day_usd, day_tokens = await self.db.call(records.spend_since, namespace, group, day.start)
                month_usd, month_tokens = await self.db.call(records.spend_since, namespace, group, month.start)
                totals = _Totals(
                    limits.time_zone, day, month, Spent(day_usd, day_tokens), Spent(month_usd, month_tokens)
                )
                self._totals[key] = totals
            return totals

    async def _notice(self, namespace: str, group: str, verdict: Verdict) -> None:
        assert verdict.period is not None
        key = f"budget:{namespace}/{group}:{verdict.period.kind}:{verdict.period.key}:{verdict.state}"
        text = ("Budget: " if verdict.state == "exceeded" else "Budget warning: ") + verdict.message
        try:
            new = await self.notify(key, namespace, group, text)
        except Exception:  # a notice that cannot be queued must not fail the model call
            log.exception("budget notice not queued", namespace=namespace, group=group)
            return
        if new and self.on_notice is not None:
            self.on_notice(namespace, group, verdict)
