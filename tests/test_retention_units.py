"""Retention without a database: the usage floor against every time zone's budget periods, the
policy's checks and cutoffs, and the gateway settings that refuse what cannot be honoured."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta

import pytest

from pynchy.gateway.budget import periods
from pynchy.gateway.settings import GatewaySettings
from pynchy.settings import SettingsExit, load
from pynchy.store import retention

KEY = "k" * 32
NOW = datetime(2026, 12, 15, 12, 0, tzinfo=UTC)


def month_starts(first_year: int, months: int) -> list[datetime]:
    return [datetime(first_year + (m // 12), m % 12 + 1, 1, tzinfo=UTC) for m in range(months)]


# Around every UTC month boundary of a year, where zones disagree about the month (and the day).
INSTANTS = [
    start + offset
    for start in month_starts(2026, 13)
    for offset in (-timedelta(seconds=1), timedelta(0), timedelta(hours=13))
]


def test_no_budget_period_in_any_zone_starts_before_the_usage_floor() -> None:
    zones = [zoneinfo.ZoneInfo(name) for name in sorted(zoneinfo.available_timezones())]
    assert len(zones) > 300
    for now in INSTANTS:
        floor = retention.usage_floor(now)
        earliest = min(period.start for zone in zones for period in periods(now, zone))
        assert floor <= earliest, (now, floor, earliest)
        # ... and the month before the current UTC month is kept too.
        assert floor <= (now.replace(day=1) - timedelta(days=1)).replace(day=1, hour=0, minute=0, second=0)


def test_the_floor_reaches_back_at_most_62_days_and_14_hours() -> None:
    # The end of August (31 days after July's 31): the floor is 1 July less 14 hours.
    end_of_august = datetime(2026, 8, 31, 23, 59, 59, tzinfo=UTC)
    assert retention.usage_floor(end_of_august) == datetime(2026, 6, 30, 10, 0, tzinfo=UTC)
    assert end_of_august - retention.usage_floor(end_of_august) < timedelta(days=62, hours=14)
    longest = max(now - retention.usage_floor(now) for now in INSTANTS)
    assert longest < timedelta(days=retention.USAGE_MIN_DAYS)
    assert timedelta(days=retention.USAGE_MIN_DAYS - 1) < timedelta(days=62, hours=14)


def test_cutoffs_follow_the_policy() -> None:
    policy = retention.RetentionPolicy({"messages": 10, "outbound": 0, "usage": 1})
    cutoffs = policy.cutoffs(NOW.astimezone(zoneinfo.ZoneInfo("Asia/Tokyo")))
    assert list(cutoffs) == ["messages", "turns", "usage", "audit", "approvals", "questions"]  # outbound: forever
    assert cutoffs["messages"] == NOW - timedelta(days=10)
    assert cutoffs["turns"] == NOW - timedelta(days=retention.DEFAULT_DAYS["turns"])
    assert cutoffs["usage"] == retention.usage_floor(NOW)  # one day would cut into the budget month
    assert all(cutoff.tzinfo is UTC for cutoff in cutoffs.values())
    assert retention.RetentionPolicy().cutoffs(NOW)["usage"] == NOW - timedelta(days=400)


@pytest.mark.parametrize(
    ("days", "batch", "message"),
    [
        ({"memories": 5}, 10, "no such kind of row: memories"),
        ({"messages": -1}, 10, "messages: -1 days"),
        ({"audit": retention.MAX_DAYS + 1}, 10, "give 0 \\(keep forever\\)"),
        ({}, 0, "at least 1 row per batch"),
    ],
)
def test_a_policy_refuses_what_it_cannot_do(days: dict[str, int], batch: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        retention.RetentionPolicy(days, batch_size=batch)


def test_the_settings_give_the_documented_defaults_for_every_kind() -> None:
    settings = GatewaySettings(run_token_key=KEY)
    assert settings.retention_policy == retention.RetentionPolicy(dict(retention.DEFAULT_DAYS), batch_size=500)
    assert retention.DEFAULT_DAYS == {
        "messages": 90, "turns": 90, "outbound": 30, "usage": 400, "audit": 365, "approvals": 90, "questions": 90
    }  # fmt: skip
    assert settings.retention_interval_seconds == 3600
    for kind in retention.KIND:  # a kind without its setting would be kept for its default, silently
        assert f"retention_{kind}_days" in GatewaySettings.model_fields, kind


def test_the_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNCHY_RETENTION_MESSAGES_DAYS", "7")
    monkeypatch.setenv("PYNCHY_RETENTION_USAGE_DAYS", "0")
    monkeypatch.setenv("PYNCHY_RETENTION_BATCH_SIZE", "50")
    policy = load(GatewaySettings, run_token_key=KEY).retention_policy
    assert policy.days_of("messages") == 7
    assert policy.days_of("usage") == 0
    assert "usage" not in policy.cutoffs(NOW)
    assert policy.batch_size == 50


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PYNCHY_RETENTION_USAGE_DAYS", "30", "30 days is too short: budgets read the usage of the current day and"),
        ("PYNCHY_RETENTION_USAGE_DAYS", "62", "give at least 63, or 0 to keep it forever"),
        ("PYNCHY_RETENTION_TURNS_DAYS", "-1", "greater than or equal to 0"),
        ("PYNCHY_RETENTION_BATCH_SIZE", "0", "greater than or equal to 1"),
        ("PYNCHY_RETENTION_INTERVAL_SECONDS", "0", "greater than 0"),
    ],
)
def test_bad_retention_settings_are_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsExit) as err:
        load(GatewaySettings, run_token_key=KEY)
    assert f"{variable}: " in str(err.value)
    assert message in str(err.value)


def test_the_shortest_usage_period_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNCHY_RETENTION_USAGE_DAYS", str(retention.USAGE_MIN_DAYS))
    assert load(GatewaySettings, run_token_key=KEY).retention_usage_days == retention.USAGE_MIN_DAYS
