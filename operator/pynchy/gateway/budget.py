"""Budgets: the day and month a call falls in, what was spent in them, and whether one more call may leave.

Pure functions of a :class:`Limits` (a Group's ``spec.budget`` or the gateway's default), the
spend so far and the time; the store query and the proxy's check live with their callers.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from pynchy.api.group import Budget

State = Literal["ok", "warning", "exceeded"]


@dataclass(frozen=True)
class Limits:
    daily_usd: float | None = None
    monthly_usd: float | None = None
    daily_tokens: int | None = None
    monthly_tokens: int | None = None
    time_zone: str = "UTC"
    warn_percent: int = 80

    @classmethod
    def of(cls, budget: Budget) -> Limits:
        return cls(
            budget.daily_usd,
            budget.monthly_usd,
            budget.daily_tokens,
            budget.monthly_tokens,
            budget.time_zone,
            budget.warn_percent,
        )

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone)


@dataclass(frozen=True)
class Period:
    kind: Literal["day", "month"]
    key: str  # 2026-12-01 or 2026-12, in the budget's time zone
    start: datetime  # UTC
    end: datetime  # UTC: when it resets


def periods(now: datetime, zone: zoneinfo.ZoneInfo) -> tuple[Period, Period]:
    """The day and the month ``now`` falls in, in ``zone`` (DST-safe: boundaries are local midnights)."""
    local = now.astimezone(zone)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    next_day = (day + timedelta(days=1, hours=3)).replace(hour=0)  # +3 h: across a 23- or 25-hour day
    month = day.replace(day=1)
    next_month = (month + timedelta(days=32)).replace(day=1)
    return (
        Period("day", day.strftime("%Y-%m-%d"), _utc(day, zone), _utc(next_day, zone)),
        Period("month", month.strftime("%Y-%m"), _utc(month, zone), _utc(next_month, zone)),
    )


def _utc(naive_local: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    return naive_local.replace(tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True)
class Spent:
    usd: float = 0.0
    tokens: int = 0


@dataclass(frozen=True)
class Verdict:
    state: State
    period: Period | None = None  # the period the state is about
    message: str = ""


def _money(value: float) -> str:
    return f"${value:,.2f}"


def _resets(period: Period, zone: zoneinfo.ZoneInfo) -> str:
    local = period.end.astimezone(zone)
    when = f"{local:%H:%M}" if period.kind == "day" else f"{local.day} {local:%B} at {local:%H:%M}"
    return f"resets {'at' if period.kind == 'day' else 'on'} {when} {zone.key}"


def judge(limits: Limits, day: tuple[Period, Spent], month: tuple[Period, Spent]) -> Verdict:
    """Exceeded (the month first: it resets later), else warning, else ok."""
    zone = limits.zone
    checks = [
        (month, limits.monthly_usd, limits.monthly_tokens, "monthly"),
        (day, limits.daily_usd, limits.daily_tokens, "daily"),
    ]
    for (period, spent), usd, tokens, word in checks:
        if usd is not None and spent.usd >= usd:
            return Verdict("exceeded", period, f"{word} budget of {_money(usd)} reached; {_resets(period, zone)}")
        if tokens is not None and spent.tokens >= tokens:
            return Verdict("exceeded", period, f"{word} budget of {tokens:,} tokens reached; {_resets(period, zone)}")
    share = limits.warn_percent / 100
    for (period, spent), usd, tokens, word in checks:
        if usd is not None and usd > 0 and spent.usd >= usd * share:
            used = f"{_money(spent.usd)} of the {word} budget of {_money(usd)} used"
            return Verdict("warning", period, f"{used}; {_resets(period, zone)}")
        if tokens is not None and tokens > 0 and spent.tokens >= tokens * share:
            used = f"{spent.tokens:,} of the {word} budget of {tokens:,} tokens used"
            return Verdict("warning", period, f"{used}; {_resets(period, zone)}")
    return Verdict("ok")
