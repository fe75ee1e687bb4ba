"""The pure scheduling core: due times, DST, catch-up, concurrency and run names. No clock, no sleeping."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from pynchy.api.scheduledtask import Schedule, ScheduledTaskSpec
from pynchy.schedule import (
    MISSED_COUNT_LIMIT,
    Done,
    Fire,
    Invalid,
    Missed,
    Skip,
    Suspended,
    TaskState,
    Wait,
    decide,
    most_recent_due,
    next_fire_time,
    parse_interval,
    run_name,
    validate_schedule,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
CREATED = datetime(2026, 1, 1, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def fires(cron: str, tz: str, after: datetime, n: int, created: datetime = CREATED) -> list[datetime]:
    """The next n fire times after `after`, chaining next_fire_time as the operator would."""
    out: list[datetime] = []
    last = None
    for _ in range(n):
        nxt = next_fire_time(Schedule(cron=cron), tz, after, last, created)
        assert nxt is not None
        assert nxt.tzinfo is UTC
        out.append(nxt)
        after = last = nxt
    return out


# --- parse_interval ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("45s", timedelta(seconds=45)),
        ("2h", timedelta(hours=2)),
        ("1h0m5s", timedelta(hours=1, seconds=5)),
        ("90m", timedelta(minutes=90)),
    ],
)
def test_parse_interval_accepts_hms_durations(text: str, expected: timedelta) -> None:
    assert parse_interval(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("30", "not a duration"),
        ("1d", "not a duration"),
        ("30m1h", "not a duration"),
        ("1.5h", "not a duration"),
        (" 30m", "not a duration"),
        ("0m", "zero"),
        ("99999999999h", "longer than"),
    ],
)
def test_parse_interval_rejects_with_a_reason(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_interval(text)


# --- cron next fire ---------------------------------------------------------------------------


def test_cron_next_fire_in_utc_is_strictly_after() -> None:
    sched = Schedule(cron="0 9 * * *")
    assert next_fire_time(sched, "UTC", utc(2026, 5, 4, 8, 59, 59), None, CREATED) == utc(2026, 5, 4, 9)
    # exactly on a fire time: the next one, not the same one
    assert next_fire_time(sched, "UTC", utc(2026, 5, 4, 9), None, CREATED) == utc(2026, 5, 5, 9)


def test_cron_next_fire_in_berlin_follows_the_offset() -> None:
    # 09:00 Berlin is 08:00Z in winter (CET) and 07:00Z in summer (CEST)
    assert fires("0 9 * * *", "Europe/Berlin", utc(2026, 1, 15), 1) == [utc(2026, 1, 15, 8)]
    assert fires("0 9 * * *", "Europe/Berlin", utc(2026, 7, 15), 1) == [utc(2026, 7, 15, 7)]


def test_cron_results_are_utc_whatever_the_input_zone() -> None:
    after = datetime(2026, 1, 15, 0, 0, tzinfo=BERLIN)  # 2026-01-14T23:00Z
    nxt = next_fire_time(Schedule(cron="0 * * * *"), "Europe/Berlin", after, None, CREATED)
    assert nxt == utc(2026, 1, 15, 0)
    assert nxt is not None
    assert nxt.tzinfo is UTC


def test_cron_never_fires_before_created_at() -> None:
    created = utc(2026, 5, 4, 9, 30)
    assert next_fire_time(Schedule(cron="0 * * * *"), "UTC", utc(2026, 5, 4, 0), None, created) == utc(2026, 5, 4, 10)


def test_spring_forward_fixed_time_fires_once_right_after_the_jump() -> None:
    # 2026-03-29 Berlin: 02:00 CET jumps to 03:00 CEST (01:00Z); 02:30 does not exist that day
    got = fires("30 2 * * *", "Europe/Berlin", utc(2026, 3, 28, 12), 3)
    assert got == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)]
    assert got[0].astimezone(BERLIN).strftime("%H:%M %Z") == "03:00 CEST"


def test_fall_back_fixed_time_fires_exactly_once() -> None:
    # 2026-10-25 Berlin: 03:00 CEST falls back to 02:00 CET; 02:30 happens at 00:30Z and again at 01:30Z
    got = fires("30 2 * * *", "Europe/Berlin", utc(2026, 10, 24, 12), 3)
    assert got == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30), utc(2026, 10, 27, 1, 30)]


def test_fall_back_from_inside_the_repeated_hour_does_not_go_back_or_repeat() -> None:
    # 01:15Z is 02:15 CET, the second pass of the repeated hour; 02:30 already ran at 00:30Z
    sched = Schedule(cron="30 2 * * *")
    assert next_fire_time(sched, "Europe/Berlin", utc(2026, 10, 25, 1, 15), None, CREATED) == utc(2026, 10, 26, 1, 30)
    due = most_recent_due(sched, "Europe/Berlin", utc(2026, 10, 25, 1, 15), utc(2026, 10, 24, 0, 30), CREATED)
    assert due is not None
    assert due.time == utc(2026, 10, 25, 0, 30)
    assert due.count == 1


def test_hourly_cron_follows_real_time_across_dst() -> None:
    # A wildcard-hour job runs every real hour: both 02:00 CEST and 02:00 CET in the fall, no gap in spring.
    fall = fires("0 * * * *", "Europe/Berlin", utc(2026, 10, 24, 23, 30), 4)
    assert fall == [utc(2026, 10, 25, 0), utc(2026, 10, 25, 1), utc(2026, 10, 25, 2), utc(2026, 10, 25, 3)]
    spring = fires("0 * * * *", "Europe/Berlin", utc(2026, 3, 28, 23, 30), 3)
    assert spring == [utc(2026, 3, 29, 0), utc(2026, 3, 29, 1), utc(2026, 3, 29, 2)]


def test_new_york_dst_transitions() -> None:
    # 2026-03-08: 02:00 EST jumps to 03:00 EDT (07:00Z); 2026-11-01: 02:00 EDT falls back to 01:00 EST
    assert fires("30 2 * * *", "America/New_York", utc(2026, 3, 7, 12), 2) == [
        utc(2026, 3, 8, 7),
        utc(2026, 3, 9, 6, 30),
    ]
    # 01:30 happens twice on 2026-11-01 (05:30Z EDT, 06:30Z EST): fires only the first
    assert fires("30 1 * * *", "America/New_York", utc(2026, 10, 31, 12), 2) == [
        utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 2, 6, 30),
    ]


def test_ranges_steps_and_day_names() -> None:
    # Friday 2026-05-08 17:40 UTC: the last slot of the day is 17:45, then Monday 09:00
    got = fires("*/15 9-17 * * MON-FRI", "UTC", utc(2026, 5, 8, 17, 40), 3)
    assert got == [utc(2026, 5, 8, 17, 45), utc(2026, 5, 11, 9, 0), utc(2026, 5, 11, 9, 15)]


def test_month_names() -> None:
    assert fires("0 0 1 JAN *", "Europe/Berlin", utc(2026, 6, 1), 2) == [utc(2026, 12, 31, 23), utc(2027, 12, 31, 23)]


# --- interval and once ------------------------------------------------------------------------


def test_interval_chains_from_created_at_then_from_last_scheduled() -> None:
    sched = Schedule(interval="1h30m")
    created = utc(2026, 5, 4, 10, 7)
    assert next_fire_time(sched, "UTC", created, None, created) == utc(2026, 5, 4, 11, 37)
    # the first run was late (started 11:40): the grid stays on the due time, not the start time
    assert next_fire_time(sched, "UTC", utc(2026, 5, 4, 11, 40), utc(2026, 5, 4, 11, 37), created) == utc(
        2026, 5, 4, 13, 7
    )


def test_interval_after_downtime_stays_on_the_grid() -> None:
    sched = Schedule(interval="30m")
    last = utc(2026, 5, 4, 10, 0)
    due = most_recent_due(sched, "UTC", utc(2026, 5, 4, 11, 40), last, CREATED)
    assert due is not None
    assert (due.time, due.count) == (utc(2026, 5, 4, 11, 30), 3)  # 10:30, 11:00, 11:30
    assert next_fire_time(sched, "UTC", utc(2026, 5, 4, 11, 40), due.time, CREATED) == utc(2026, 5, 4, 12, 0)
    # created_at itself is not a due point
    assert most_recent_due(sched, "UTC", utc(2026, 5, 4, 10, 29), None, last) is None


def test_once_before_and_after_firing() -> None:
    at = utc(2026, 12, 24, 18)
    sched = Schedule(once=at)
    assert next_fire_time(sched, "UTC", utc(2026, 12, 1), None, CREATED) == at
    assert most_recent_due(sched, "UTC", at - timedelta(seconds=1), None, CREATED) is None
    due = most_recent_due(sched, "UTC", at + timedelta(seconds=5), None, CREATED)
    assert due is not None
    assert due.time == at
    assert next_fire_time(sched, "UTC", at + timedelta(seconds=5), at, CREATED) is None
    assert most_recent_due(sched, "UTC", at + timedelta(days=1), at, CREATED) is None


# --- most_recent_due ---------------------------------------------------------------------------


def test_most_recent_due_includes_created_at_and_now_boundaries() -> None:
    sched = Schedule(cron="0 * * * *")
    # never scheduled: a due time equal to created_at counts; one equal to now counts
    due = most_recent_due(sched, "UTC", utc(2026, 5, 4, 11), None, utc(2026, 5, 4, 10))
    assert due is not None
    assert (due.time, due.count) == (utc(2026, 5, 4, 11), 2)
    # the handled due time itself does not count again
    assert most_recent_due(sched, "UTC", utc(2026, 5, 4, 11, 59), utc(2026, 5, 4, 11), CREATED) is None


def test_most_recent_due_caps_the_missed_count() -> None:
    due = most_recent_due(Schedule(cron="* * * * *"), "UTC", utc(2026, 5, 4, 12), utc(2026, 5, 1), CREATED)
    assert due is not None
    assert due.time == utc(2026, 5, 4, 12)
    assert (due.count, due.too_many) == (MISSED_COUNT_LIMIT, True)


# --- decide ------------------------------------------------------------------------------------


def hourly(**kw: object) -> TaskState:
    args: dict[str, object] = {
        "schedule": Schedule(cron="0 * * * *"),
        "created_at": CREATED,
        "last_scheduled": utc(2026, 5, 4, 9),
    }
    args.update(kw)
    return TaskState(**args)  # type: ignore[arg-type]


def test_decide_waits_until_the_next_due_time() -> None:
    assert decide(utc(2026, 5, 4, 9, 20), hourly()) == Wait(until=utc(2026, 5, 4, 10))
    assert decide(utc(2026, 5, 4, 9, 20), hourly()).next_time == utc(2026, 5, 4, 10)


def test_catch_up_after_three_hours_beyond_deadline_is_missed() -> None:
    # last run 09:00, operator down until 12:10: 10:00, 11:00 and 12:00 were missed; 12:00 is 600 s late
    decision = decide(utc(2026, 5, 4, 12, 10), hourly(starting_deadline_seconds=300))
    assert decision == Missed(scheduled_time=utc(2026, 5, 4, 12), next_time=utc(2026, 5, 4, 13), missed_count=3)
    assert decision.reason == "DeadlineExceeded"
    # once recorded, the next tick just waits for 13:00
    assert decide(utc(2026, 5, 4, 12, 10), hourly(last_scheduled=utc(2026, 5, 4, 12))) == Wait(
        until=utc(2026, 5, 4, 13)
    )


def test_catch_up_within_deadline_fires_once_for_the_most_recent_due_time() -> None:
    decision = decide(utc(2026, 5, 4, 12, 3), hourly(starting_deadline_seconds=300, concurrency_policy="Allow"))
    assert decision == Fire(scheduled_time=utc(2026, 5, 4, 12), next_time=utc(2026, 5, 4, 13), missed_count=2)
    # after the operator records 12:00, nothing else is due: exactly one catch-up run
    after = decide(utc(2026, 5, 4, 12, 3, 30), hourly(last_scheduled=utc(2026, 5, 4, 12)))
    assert isinstance(after, Wait)


def test_deadline_boundary_and_no_deadline() -> None:
    at_deadline = decide(utc(2026, 5, 4, 10, 5), hourly(starting_deadline_seconds=300))
    assert isinstance(at_deadline, Fire)
    one_second_late = decide(utc(2026, 5, 4, 10, 5, 1), hourly(starting_deadline_seconds=300))
    assert isinstance(one_second_late, Missed)
    days_late = decide(utc(2026, 5, 6, 10, 30), hourly(starting_deadline_seconds=None))
    assert isinstance(days_late, Fire)
    assert days_late.scheduled_time == utc(2026, 5, 6, 10)
    assert days_late.missed_count == 48


def test_forbid_skips_while_runs_are_active() -> None:
    decision = decide(utc(2026, 5, 4, 10, 1), hourly(concurrency_policy="Forbid", active=["t-29631480"]))
    assert decision == Skip(scheduled_time=utc(2026, 5, 4, 10), next_time=utc(2026, 5, 4, 11), active=("t-29631480",))
    assert decision.reason == "ConcurrencyForbid"
    assert decide(utc(2026, 5, 4, 10, 1), hourly(concurrency_policy="Forbid")) == Fire(
        scheduled_time=utc(2026, 5, 4, 10), next_time=utc(2026, 5, 4, 11)
    )


def test_replace_fires_and_names_the_active_runs() -> None:
    decision = decide(utc(2026, 5, 4, 10, 1), hourly(concurrency_policy="Replace", active=["a", "b"]))
    assert decision == Fire(
        scheduled_time=utc(2026, 5, 4, 10), next_time=utc(2026, 5, 4, 11), replace_active=("a", "b")
    )


def test_allow_fires_alongside_active_runs() -> None:
    decision = decide(utc(2026, 5, 4, 10, 1), hourly(concurrency_policy="Allow", active=["a"]))
    assert decision == Fire(scheduled_time=utc(2026, 5, 4, 10), next_time=utc(2026, 5, 4, 11))


def test_suspend_starts_nothing() -> None:
    assert decide(utc(2026, 5, 4, 10, 1), hourly(suspend=True)) == Suspended()
    assert decide(utc(2026, 5, 4, 9, 30), hourly(suspend=True)) == Suspended()


def test_once_fires_then_is_done() -> None:
    at = utc(2026, 12, 24, 18)
    state = TaskState(schedule=Schedule(once=at), created_at=CREATED)
    assert decide(utc(2026, 12, 24, 17), state) == Wait(until=at)
    assert decide(at + timedelta(seconds=30), state) == Fire(scheduled_time=at, next_time=None)
    handled = TaskState(schedule=Schedule(once=at), created_at=CREATED, last_scheduled=at)
    assert decide(at + timedelta(minutes=1), handled) == Done()
    # a once noticed only after its deadline is Missed, and then Done as well
    assert decide(at + timedelta(hours=1), state) == Missed(scheduled_time=at, next_time=None)


def test_interval_decision_from_spec() -> None:
    spec = ScheduledTaskSpec(
        group_ref={"name": "home"},  # type: ignore[arg-type]
        prompt="check the mail",
        schedule=Schedule(interval="30m"),
        concurrency_policy="Replace",
    )
    created = utc(2026, 5, 4, 10)
    state = TaskState.from_spec(spec, created_at=created, active=["old"])
    assert decide(utc(2026, 5, 4, 10, 29), state) == Wait(until=utc(2026, 5, 4, 10, 30))
    assert decide(utc(2026, 5, 4, 10, 31), state) == Fire(
        scheduled_time=utc(2026, 5, 4, 10, 30), next_time=utc(2026, 5, 4, 11), replace_active=("old",)
    )


def test_decide_reports_an_invalid_schedule_instead_of_raising() -> None:
    decision = decide(utc(2026, 5, 4), TaskState(schedule=Schedule(cron="61 * * * *"), created_at=CREATED))
    assert isinstance(decision, Invalid)
    assert decision.next_time is None
    assert "minute" in decision.problems[0]


def test_decide_needs_aware_times() -> None:
    with pytest.raises(ValueError, match="aware"):
        decide(datetime(2026, 5, 4), hourly())


# --- run_name ---------------------------------------------------------------------------------


def test_run_name_is_cronjob_style_and_deterministic() -> None:
    at = utc(2026, 5, 4, 10)
    assert run_name("daily-digest", at) == f"daily-digest-{int(at.timestamp()) // 60}"
    assert run_name("daily-digest", at) == "daily-digest-29631480"
    # the same instant in another zone, or with seconds, names the same run
    assert run_name("daily-digest", at.astimezone(BERLIN)) == "daily-digest-29631480"
    assert run_name("daily-digest", at + timedelta(seconds=59)) == "daily-digest-29631480"
    assert run_name("daily-digest", at + timedelta(minutes=1)) == "daily-digest-29631481"


def test_run_name_fits_a_dns_label() -> None:
    longest = "a" * 52
    name = run_name(longest, datetime(9999, 12, 31, 23, 59, tzinfo=UTC))
    assert len(name) <= 63
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)
    with pytest.raises(ValueError, match="52"):
        run_name("a" * 53, utc(2026, 5, 4))
    with pytest.raises(ValueError, match="DNS label"):
        run_name("Daily.Digest", utc(2026, 5, 4))


# --- validate_schedule ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "tz", "fragments"),
    [
        (Schedule(cron="61 * * * *"), "UTC", ["schedule.cron '61 * * * *'", "minute 0-59"]),
        (Schedule(cron="* * 31 2 *"), "UTC", ["day-of-month", "day that exists"]),
        (Schedule(cron="0 0 * * * *"), "UTC", ["exactly five fields"]),
        (
            Schedule(cron="0 9 * * 1-5"),
            "Mars/Olympus",
            ["'Mars/Olympus' is not a known IANA time zone", "Europe/Berlin"],
        ),
        (Schedule(interval="30s"), "UTC", ["shorter than the 1m minimum", "use 1m or more"]),
        (Schedule(interval="5x"), "UTC", ["schedule.interval '5x' is not a duration", "30m"]),
        (Schedule(cron="0 9 * * *", interval="1h"), "UTC", ["set exactly one of", "cron, interval"]),
    ],
)
def test_validate_schedule_says_what_to_fix(schedule: Schedule, tz: str, fragments: list[str]) -> None:
    problems = validate_schedule(schedule, tz, utc(2026, 5, 4))
    text = " | ".join(problems)
    for fragment in fragments:
        assert fragment in text


def test_validate_schedule_accepts_good_schedules() -> None:
    now = utc(2026, 5, 4)
    assert validate_schedule(Schedule(cron="*/15 9-17 * * MON-FRI"), "Europe/Berlin", now) == []
    assert validate_schedule(Schedule(cron="0 0 29 2 *"), "UTC", now) == []  # leap days exist
    assert validate_schedule(Schedule(interval="1m"), "UTC", now) == []
    assert validate_schedule(Schedule(once=utc(2026, 5, 5)), "UTC", now, created_at=now) == []


def test_validate_once_in_the_past_only_against_creation_time() -> None:
    at = utc(2026, 5, 4, 9)
    problems = validate_schedule(Schedule(once=at), "UTC", utc(2026, 5, 4, 10), created_at=utc(2026, 5, 4, 10))
    assert len(problems) == 1
    assert "already in the past when the task was created" in problems[0]
    assert "set a time in the future" in problems[0]
    # a once that was valid at creation stays valid after it fired
    assert validate_schedule(Schedule(once=at), "UTC", utc(2026, 5, 5), created_at=utc(2026, 5, 1)) == []
    # without created_at (not the first evaluation) the check is not made
    assert validate_schedule(Schedule(once=at), "UTC", utc(2026, 5, 5)) == []
    # a few seconds of clock skew is not an error
    assert validate_schedule(Schedule(once=at), "UTC", at, created_at=at + timedelta(seconds=10)) == []


# --- decide, step by step, as the operator calls it --------------------------------------------
# The controller's loop without Kubernetes: look every `step`, treat the due time of a Fire, Skip or
# Missed as handled (fed back as last_scheduled), and end every run at once. Days of schedule in
# milliseconds; the controller itself is tested against the real API server (tests/cluster).


def step_through(
    schedule: Schedule, start: datetime, until: datetime, step: timedelta, tz: str = "UTC"
) -> list[datetime]:
    """The due times fired looking every `step` from `start` (the task's creation) to `until`."""
    fired: list[datetime] = []
    last: datetime | None = None
    now = start
    while now <= until:
        decision = decide(now, TaskState(schedule=schedule, created_at=start, time_zone=tz, last_scheduled=last))
        if isinstance(decision, Fire | Skip | Missed):
            assert last is None or decision.scheduled_time > last  # never the same due time twice
            last = decision.scheduled_time
            if isinstance(decision, Fire):
                fired.append(decision.scheduled_time)
        now += step
    return fired


def berlin(*args: int, fold: int = 0) -> datetime:
    """A Berlin wall-clock time as the instant (UTC) it names."""
    return datetime(*args, tzinfo=BERLIN, fold=fold).astimezone(UTC)  # type: ignore[misc]


def test_stepping_fires_each_due_time_of_a_ranged_cron_once() -> None:
    fired = step_through(
        Schedule(cron="*/15 9-10 * * 1-5"), utc(2027, 1, 4, 8, 50), utc(2027, 1, 5, 11), timedelta(seconds=20)
    )
    # Monday and Tuesday, 09:00 to 10:45 every quarter hour; never twice, never off the grid.
    assert fired == [utc(2027, 1, d, h, m) for d in (4, 5) for h in (9, 10) for m in (0, 15, 30, 45)]


def test_stepping_through_a_spring_forward_day_in_berlin() -> None:
    # 2027-03-28: 02:00 CET jumps to 03:00 CEST. 02:30 does not exist that day: the run starts right
    # after the jump, once.
    fired = step_through(
        Schedule(cron="30 2 * * *"),
        berlin(2027, 3, 27, 0, 0),
        berlin(2027, 3, 29, 23, 0),
        timedelta(minutes=5),
        "Europe/Berlin",
    )
    assert fired == [berlin(2027, 3, 27, 2, 30), berlin(2027, 3, 28, 3, 0), berlin(2027, 3, 29, 2, 30)]
    assert fired[1] == utc(2027, 3, 28, 1, 0)


def test_stepping_through_a_fall_back_day_in_berlin() -> None:
    # 2027-10-31: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice and the task runs once.
    fired = step_through(
        Schedule(cron="30 2 * * *"),
        berlin(2027, 10, 30, 0, 0),
        berlin(2027, 11, 1, 23, 0),
        timedelta(minutes=5),
        "Europe/Berlin",
    )
    assert fired == [berlin(2027, 10, 30, 2, 30), berlin(2027, 10, 31, 2, 30), berlin(2027, 11, 1, 2, 30)]
    assert fired[1] == utc(2027, 10, 31, 0, 30)  # the first 02:30 (CEST)


def test_stepping_an_hourly_cron_across_fall_back_runs_every_real_hour() -> None:
    fired = step_through(
        Schedule(cron="0 * * * *"),
        utc(2027, 10, 30, 22, 30),
        utc(2027, 10, 31, 4, 30),
        timedelta(minutes=1),
        "Europe/Berlin",
    )
    assert fired == [utc(2027, 10, 30, 23) + timedelta(hours=i) for i in range(6)]
    # 02:00 local twice: once in summer time, once in winter time.
    assert [t.astimezone(BERLIN).strftime("%H%Z") for t in fired][1:3] == ["02CEST", "02CET"]


def test_stepping_a_once_fires_it_once_then_is_done() -> None:
    at = utc(2027, 1, 4, 8, 20)
    fired = step_through(Schedule(once=at), utc(2027, 1, 4, 8), utc(2027, 1, 4, 9), timedelta(minutes=1))
    assert fired == [at]
    assert (
        decide(utc(2027, 1, 4, 9), TaskState(schedule=Schedule(once=at), created_at=CREATED, last_scheduled=at))
        == Done()
    )
