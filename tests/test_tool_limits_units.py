"""The agent tool limits without a gateway: the sliding window, a Group's values over the defaults,
and the refusals the model reads."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from pynchy.api.group import ToolLimits
from pynchy.gateway.ratelimit import SlidingWindow
from pynchy.gateway.settings import GatewaySettings
from pynchy.gateway.toollimits import LimitValues, SendLimiter, spacing_refusal, task_count_refusal
from pynchy_agent.protocol import ScheduleTaskArgs

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DEFAULTS = LimitValues(10, 20, 300)


# -- the window ----------------------------------------------------------------------------


def test_window_allows_the_limit_then_says_when_the_next_slot_frees() -> None:
    w: SlidingWindow[str] = SlidingWindow(60.0)
    assert [w.acquire("g", 3, t) for t in (0.0, 10.0, 20.0)] == [0.0, 0.0, 0.0]
    assert w.acquire("g", 3, 30.0) == 30.0  # the event at 0 leaves the window at 60
    assert w.acquire("g", 3, 59.9) == pytest.approx(0.1)
    assert w.acquire("g", 3, 60.0) == 0.0  # it left: a slot, and now 10, 20, 60 are logged
    assert w.acquire("g", 3, 61.0) == pytest.approx(9.0)


def test_refused_events_do_not_count_and_keys_are_apart() -> None:
    w: SlidingWindow[str] = SlidingWindow(60.0)
    assert w.acquire("a", 1, 0.0) == 0.0
    for t in range(1, 50):
        assert w.acquire("a", 1, float(t)) > 0
    assert w.acquire("a", 1, 60.0) == 0.0  # the refusals did not extend the window
    assert w.acquire("b", 1, 60.0) == 0.0


def test_a_lowered_limit_waits_until_enough_events_left() -> None:
    w: SlidingWindow[str] = SlidingWindow(60.0)
    for t in (0.0, 1.0, 2.0, 3.0):
        w.acquire("g", 10, t)
    # Four logged, the limit now 2: a slot frees when one is left, i.e. when the event at 2 leaves at 62.
    assert w.acquire("g", 2, 5.0) == pytest.approx(57.0)
    assert w.acquire("g", 0, 5.0) == 60.0  # a zero limit never allows one


def test_quiet_keys_leave_nothing_behind() -> None:
    w: SlidingWindow[str] = SlidingWindow(60.0)
    for i in range(100):
        w.acquire(f"g{i}", 5, float(i) / 10)
    assert len(w) == 100
    w.acquire("late", 5, 200.0)
    assert len(w) == 1


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window must be positive"):
        SlidingWindow(0)


def test_send_limiter_refuses_with_the_wait() -> None:
    now = [0.0]
    sends = SendLimiter(lambda: now[0])
    assert sends.take("ns", "x", 2) is None
    assert sends.take("ns", "x", 2) is None
    now[0] = 17.2
    assert sends.take("ns", "x", 2) == (
        "send_message limit reached: 2 messages per minute for Group x; try again in 43 s "
        "(an admin can raise spec.agent.toolLimits.sendMessagesPerMinute)"
    )
    assert sends.take("ns", "y", 2) is None  # another Group has its own window
    assert "turned off" in (sends.take("ns", "z", 0) or "")


# -- values --------------------------------------------------------------------------------


def test_group_values_override_the_defaults_field_by_field() -> None:
    assert DEFAULTS.over(None) == DEFAULTS
    assert DEFAULTS.over(ToolLimits()) == DEFAULTS
    spec = ToolLimits.from_k8s({"sendMessagesPerMinute": 0, "minScheduleIntervalSeconds": 3600})
    assert DEFAULTS.over(spec) == LimitValues(0, 20, 3600)


def test_settings_defaults_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    base: dict[str, Any] = {"run_token_key": "k" * 32}
    assert GatewaySettings(**base).tool_limits == LimitValues(10, 20, 300)
    monkeypatch.setenv("PYNCHY_SEND_MESSAGES_PER_MINUTE", "3")
    monkeypatch.setenv("PYNCHY_MAX_SCHEDULED_TASKS", "0")
    monkeypatch.setenv("PYNCHY_MIN_SCHEDULE_INTERVAL_SECONDS", "3600")
    assert GatewaySettings(**base).tool_limits == LimitValues(3, 0, 3600)
    monkeypatch.setenv("PYNCHY_MIN_SCHEDULE_INTERVAL_SECONDS", "30")
    with pytest.raises(ValueError, match="min_schedule_interval_seconds"):
        GatewaySettings(**base)


# -- refusals ------------------------------------------------------------------------------


def _args(**fields: Any) -> ScheduleTaskArgs:
    return ScheduleTaskArgs.model_validate({"name": "t", "prompt": "p", **fields})


def test_task_count_refusal() -> None:
    assert task_count_refusal(20, "x", 19) is None
    assert task_count_refusal(20, "x", 20) == (
        "schedule_task limit reached: Group x has 20 tasks its agent created and may have at most 20; cancel one "
        "(list_tasks shows them) or ask an admin to raise spec.agent.toolLimits.maxScheduledTasks"
    )
    assert "turned off" in (task_count_refusal(0, "x", 0) or "")


def test_spacing_refusal_names_the_gap_the_limit_and_the_field() -> None:
    text = spacing_refusal(_args(interval="1m"), 300, "x", NOW)
    assert text == (
        "schedule_task refused: interval 1m runs as often as every 60 s, and Group x may schedule runs at most "
        "every 300 s; choose a longer interval or a sparser cron expression, or ask an admin to lower "
        "spec.agent.toolLimits.minScheduleIntervalSeconds"
    )
    cron = spacing_refusal(_args(cron="0,2 9 * * *"), 300, "x", NOW)
    assert cron is not None
    assert "cron '0,2 9 * * *' runs as often as every 120 s" in cron


@pytest.mark.parametrize(
    "fields",
    [
        {"interval": "5m"},  # exactly the limit
        {"cron": "0 9 * * *"},
        {"once": "2026-12-24T18:00:00Z"},  # no interval applies
        {"cron": "nope"},  # the API server's validation answers
        {"cron": "* * * * *", "interval": "1m"},  # the tool's own check answers
        {},
    ],
)
def test_spacing_refusal_lets_these_through(fields: dict[str, Any]) -> None:
    assert spacing_refusal(_args(**fields), 300, "x", NOW) is None


def test_a_minimum_of_one_minute_needs_no_check() -> None:
    assert spacing_refusal(_args(cron="* * * * *"), 60, "x", NOW) is None
