"""How often a schedule fires at its most frequent (pynchy.schedule.spacing), without a clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from pynchy.schedule import shortest_gap
from pynchy.schedule.spacing import CRON_HORIZON

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # a Tuesday
MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)


@dataclass(frozen=True)
class S:
    cron: str | None = None
    interval: str | None = None
    once: datetime | None = None


@pytest.mark.parametrize(
    ("cron", "gap"),
    [
        ("* * * * *", MINUTE),
        ("*/5 * * * *", 5 * MINUTE),
        ("0 * * * *", HOUR),
        ("0 9 * * *", DAY),
        ("0 9 * * 1-5", DAY),  # Friday to Monday is longer; the shortest is a day
        ("0 9 * * 1", 7 * DAY),
        # Irregular: the shortest gap is not the first one after NOW (12:00), it comes the next morning.
        ("0,5 9 * * *", 5 * MINUTE),
        ("0 9,23 * * *", 10 * HOUR),
        # Monthly days: the 2nd, the 20th, then the 1st and 2nd again, a day apart.
        ("0 9 1,2,20 * *", DAY),
        ("0 9 1 1 *", 365 * DAY),  # yearly: two firings within the horizon
    ],
)
def test_cron_gap_is_the_shortest_between_the_next_firings(cron: str, gap: timedelta) -> None:
    assert shortest_gap(S(cron=cron), "UTC", NOW) == gap


def test_cron_gap_is_evaluated_in_the_time_zone() -> None:
    # 23:00 to 09:00 is 10 hours, except in Berlin on the night the clocks go forward (within the window).
    assert shortest_gap(S(cron="0 9,23 * * *"), "UTC", NOW) == 10 * HOUR
    assert shortest_gap(S(cron="0 9,23 * * *"), "Europe/Berlin", NOW) == 9 * HOUR
    # A daylight-saving change in the window shows: 09:00 to 09:00 across the spring jump is 23 hours.
    spring = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)
    assert shortest_gap(S(cron="0 9 * * *"), "Europe/Berlin", spring) == 23 * HOUR


def test_a_rare_cron_stops_at_the_horizon() -> None:
    # 29 February fires every four years: one firing within the horizon, so no gap at all.
    assert CRON_HORIZON < 4 * 365 * DAY
    assert shortest_gap(S(cron="0 9 29 2 *"), "UTC", NOW) is None


def test_stop_below_returns_the_first_gap_under_it() -> None:
    # From 12:00: 23:00, 09:00 (10h), 10:00 (1h), 23:00 (13h), ...: the shortest is 1h, but a caller
    # asking only about gaps under 11h gets the first such gap and the search ends there.
    cron = S(cron="0 9,10,23 * * *")
    assert shortest_gap(cron, "UTC", NOW) == HOUR
    assert shortest_gap(cron, "UTC", NOW, stop_below=11 * HOUR) == 10 * HOUR


def test_interval_and_once() -> None:
    assert shortest_gap(S(interval="1h30m"), "UTC", NOW) == 90 * MINUTE
    assert shortest_gap(S(once=NOW + DAY), "UTC", NOW) is None


@pytest.mark.parametrize("schedule", [S(cron="61 * * * *"), S(cron="0 0 30 2 *"), S(interval="soon")])
def test_a_schedule_that_cannot_be_evaluated_is_a_value_error(schedule: S) -> None:
    with pytest.raises(ValueError, match=r"schedule\.|interval"):
        shortest_gap(schedule, "UTC", NOW)


def test_an_unknown_time_zone_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="time zone"):
        shortest_gap(S(cron="0 9 * * *"), "Mars/Olympus", NOW)
