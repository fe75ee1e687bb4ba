"""Budgets and prices without a gateway: periods in a time zone (DST included), verdicts, costs."""

from __future__ import annotations

import json
import zoneinfo
from datetime import UTC, datetime

import pytest

from pynchy.api.group import Budget, GroupSpec
from pynchy.gateway.budget import Limits, Spent, Verdict, judge, periods
from pynchy.gateway.pricing import DEFAULT_PRICES, Price, cost_usd, price_of, tokens_of
from pynchy.gateway.usage import ModelUsage

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def test_the_day_and_month_are_local_midnights_in_utc() -> None:
    day, month = periods(datetime(2026, 12, 1, 22, 30, tzinfo=UTC), BERLIN)  # 23:30 in Berlin
    assert day.key == "2026-12-01"
    assert (day.start, day.end) == (datetime(2026, 11, 30, 23, 0, tzinfo=UTC), datetime(2026, 12, 1, 23, 0, tzinfo=UTC))
    assert month.key == "2026-12"
    assert (month.start, month.end) == (datetime(2026, 11, 30, 23, tzinfo=UTC), datetime(2026, 12, 31, 23, tzinfo=UTC))
    after = periods(datetime(2026, 12, 1, 23, 30, tzinfo=UTC), BERLIN)[0]  # 00:30 on the 2nd in Berlin
    assert after.key == "2026-12-02"


def test_a_day_across_a_dst_change_is_23_or_25_hours() -> None:
    spring = periods(datetime(2026, 3, 29, 12, tzinfo=UTC), BERLIN)[0]
    assert spring.end - spring.start == (datetime(2026, 1, 1, 23, tzinfo=UTC) - datetime(2026, 1, 1, tzinfo=UTC))
    autumn = periods(datetime(2026, 10, 25, 12, tzinfo=UTC), BERLIN)[0]
    assert (autumn.end - autumn.start).total_seconds() == 25 * 3600
    december = periods(datetime(2026, 12, 31, 12, tzinfo=UTC), BERLIN)[1]
    assert december.end == datetime(2026, 12, 31, 23, tzinfo=UTC)  # 1 January 00:00 in Berlin


def verdict(limits: Limits, day: Spent, month: Spent | None = None, now: datetime | None = None) -> Verdict:
    d, m = periods(now or datetime(2026, 12, 1, 12, tzinfo=UTC), limits.zone)
    return judge(limits, (d, day), (m, month or day))


def test_under_the_warning_share_is_ok_and_over_it_warns_once_per_period() -> None:
    limits = Limits(daily_usd=5.0, time_zone="Europe/Berlin")
    assert verdict(limits, Spent(3.99)).state == "ok"
    warning = verdict(limits, Spent(4.10))
    assert warning.state == "warning"
    assert warning.period is not None
    assert warning.period.key == "2026-12-01"
    assert warning.message == "$4.10 of the daily budget of $5.00 used; resets at 00:00 Europe/Berlin"


def test_a_reached_limit_is_exceeded_with_when_it_resets() -> None:
    daily = verdict(Limits(daily_usd=5.0, time_zone="Europe/Berlin"), Spent(5.0))
    assert daily.state == "exceeded"
    assert daily.message == "daily budget of $5.00 reached; resets at 00:00 Europe/Berlin"
    monthly = verdict(Limits(daily_usd=5.0, monthly_usd=20.0), Spent(1.0), Spent(25.0))
    assert monthly.state == "exceeded"  # the month first: it resets later
    assert monthly.message == "monthly budget of $20.00 reached; resets on 1 January at 00:00 UTC"
    tokens = verdict(Limits(daily_tokens=1000), Spent(0.0, 1000))
    assert tokens.message == "daily budget of 1,000 tokens reached; resets at 00:00 UTC"


def test_no_limits_is_always_ok() -> None:
    assert verdict(Limits(), Spent(1e9, 10**12)).state == "ok"


def test_a_group_budget_becomes_limits_and_its_time_zone_is_checked() -> None:
    budget = Budget.from_k8s({"dailyUsd": 2.5, "timeZone": "America/New_York", "warnPercent": 50})
    assert Limits.of(budget) == Limits(daily_usd=2.5, time_zone="America/New_York", warn_percent=50)
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'; use an IANA name"):
        Budget.from_k8s({"dailyUsd": 1, "timeZone": "Mars/Olympus"})
    spec = GroupSpec.from_k8s({"channels": [{"local": {"name": "x"}}], "budget": {"monthlyUsd": 10}})
    assert spec.budget is not None
    assert spec.budget.monthly_usd == 10


def test_costs_follow_the_longest_matching_price_row() -> None:
    usage = ModelUsage("claude-sonnet-4-5-20250929", 1_000_000, 100_000, 2_000_000, 400_000)
    # input 3.00 + output 1.50 + cache read 2M x 0.30 + cache write 0.4M x 3.75
    assert cost_usd(usage, DEFAULT_PRICES) == pytest.approx(3.0 + 1.5 + 0.6 + 1.5)
    assert tokens_of(usage) == 3_500_000
    assert price_of("claude-sonnet-4-20250514", DEFAULT_PRICES) == DEFAULT_PRICES["claude-sonnet-4"]
    assert price_of("claude-opus-4-5", DEFAULT_PRICES).input == 5.0
    custom = {**DEFAULT_PRICES, "claude-sonnet-4-5": Price(input=1, output=2, cache_write=0, cache_read=0)}
    assert cost_usd(ModelUsage("claude-sonnet-4-5", 1_000_000, 1_000_000), custom) == pytest.approx(3.0)


def test_an_unknown_model_costs_what_the_dearest_row_costs() -> None:
    unknown = ModelUsage("some-new-model", 1_000_000, 0)
    assert cost_usd(unknown, DEFAULT_PRICES) == pytest.approx(15.0)  # claude-opus-4-1's input price


def test_usage_is_read_from_an_sse_stream_split_anywhere() -> None:
    from pynchy.gateway.usage import SseUsage

    def event(kind: str, data: dict[str, object]) -> bytes:
        return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()

    start = {"type": "message_start", "message": {"model": "claude-sonnet-4-5", "usage": {"input_tokens": 120}}}
    # A delta whose text names the usage events is content, not usage.
    text = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "message_delta"}}
    end = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 42}}
    stream = event("message_start", start) + event("content_block_delta", text) * 50 + event("message_delta", end)
    for size in (1, 7, 64, len(stream)):
        sse = SseUsage()
        for i in range(0, len(stream), size):
            sse.feed(stream[i : i + size])
        assert (sse.usage.model, sse.usage.input_tokens, sse.usage.output_tokens) == ("claude-sonnet-4-5", 120, 42)
