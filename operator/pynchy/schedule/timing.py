"""When a ScheduledTask is due: interval parsing, time zones, next and most recent due times.

Pure functions: no clock, no I/O. Every instant goes in and comes out as an aware ``datetime``;
results are in UTC.

Cron is evaluated with **cronsim**, not croniter. Both parse five-field cron, but only cronsim
follows the Vixie/Debian cron rules for daylight-saving transitions that a personal assistant
needs (checked against cronsim 2.8 and croniter 7.0 on Europe/Berlin 2026):

- spring forward: a fixed-time job ("30 2 * * *") whose time falls in the skipped hour fires once,
  right after the jump (03:00 local); both libraries do this;
- fall back: a fixed-time job whose time falls in the repeated hour fires **once** (the first
  occurrence). croniter 7.0 fires it twice (00:30Z and 01:30Z on 2026-10-25); cronsim fires once;
- jobs whose minute or hour field starts with ``*`` ("*/15 * * * *", "0 * * * *") follow real
  elapsed time, as in Vixie cron: they do not catch up a skipped hour, and they run again in the
  repeated hour (an hourly job runs at 02:00 CEST and 02:00 CET).

cronsim also rejects impossible day-of-month/month combinations ("* * 31 2 *") when it parses,
so ``validate_schedule`` can report them. cronsim iterates in local wall time for fixed-time
jobs; the wrappers below re-check every result in UTC so that an ``after`` or ``now`` inside a
repeated hour never yields a time in the past or misses one (see ``_cron_after``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim

# Shortest interval the API accepts; also what keeps run names (unix minutes) unique.
MIN_INTERVAL = timedelta(minutes=1)
# Longest interval accepted, so that date arithmetic can never overflow.
MAX_INTERVAL = timedelta(days=3650)
# Due times counted at most when working out how many were missed (CronJob warns at 100).
MISSED_COUNT_LIMIT = 100

_INTERVAL = re.compile(r"^(?:(?P<h>[0-9]+)h)?(?:(?P<m>[0-9]+)m)?(?:(?P<s>[0-9]+)s)?$")
_EPSILON = timedelta(microseconds=1)


class ScheduleLike(Protocol):
    """What the timing functions read from ``spec.schedule`` (``pynchy.api.scheduledtask.Schedule``)."""

    @property
    def cron(self) -> str | None: ...

    @property
    def interval(self) -> str | None: ...

    @property
    def once(self) -> datetime | None: ...


@dataclass(frozen=True)
class DueTime:
    """The most recent due time that has not been handled yet.

    ``count`` is how many unhandled due times fell in the window, this one included (at most
    ``MISSED_COUNT_LIMIT``); ``too_many`` says the count stopped at that limit and the real number
    is higher (CronJob's TooManyMissedTimes: usually a long outage or a clock jump).
    """

    time: datetime
    count: int = 1
    too_many: bool = False


def parse_interval(text: str) -> timedelta:
    """Parse a duration made of hours, minutes and seconds, in that order: "45s", "30m", "2h", "1h30m".

    Raises ValueError saying what is wrong for an empty, malformed, zero or overlong duration.
    The 1m minimum of the API is checked by ``validate_schedule``, not here.
    """
    if not text:
        raise ValueError("interval is empty; write a duration such as 30m, 2h or 1h30m")
    match = _INTERVAL.match(text)
    if match is None:
        raise ValueError(
            f"interval {text!r} is not a duration of whole hours, minutes and seconds in that order "
            "(h, m, s; no spaces, decimals or other units); write for example 30m, 2h or 1h30m"
        )
    try:
        value = timedelta(
            hours=int(match["h"] or 0),
            minutes=int(match["m"] or 0),
            seconds=int(match["s"] or 0),
        )
    except OverflowError:
        value = MAX_INTERVAL * 2
    if value <= timedelta(0):
        raise ValueError(f"interval {text!r} is zero; write a positive duration such as 30m")
    if value > MAX_INTERVAL:
        raise ValueError(f"interval {text!r} is longer than {MAX_INTERVAL.days} days; use a cron schedule or once")
    return value


def load_zone(name: str) -> tzinfo:
    """The IANA time zone ``name`` (``datetime.UTC`` for "UTC"); ValueError saying what to fix if unknown."""
    if name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"time zone {name!r} is not a known IANA time zone; use a name such as UTC, Europe/Berlin "
            "or America/New_York"
        ) from None


def require_aware(name: str, value: datetime) -> datetime:
    """Return ``value`` unchanged; raise ValueError if it has no time zone (a programming error)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got naive {value.isoformat()}")
    return value


def cron_after(expr: str, zone: tzinfo, after: datetime) -> Iterator[datetime]:
    """Fire times of ``expr`` in ``zone`` strictly after ``after``, ascending, in UTC.

    Ends when cronsim finds no match within 50 years. Raises cronsim.CronSimError for a bad
    expression.
    """
    require_aware("after", after)
    floor = after.astimezone(UTC)
    # For fixed-time jobs cronsim iterates in naive wall time and maps each result to the first
    # occurrence (fold=0). Starting from a wall time in the second pass of a repeated hour it would
    # return that hour's first-pass times, which are earlier in real time: skip them. Wall time to
    # UTC is monotonic under that mapping, so nothing later than `after` can be missed.
    for local in CronSim(expr, after.astimezone(zone)):
        instant = local.astimezone(UTC)
        if instant > floor:
            floor = instant
            yield instant


def cron_latest(expr: str, zone: tzinfo, now: datetime) -> datetime | None:
    """The latest fire time of ``expr`` in ``zone`` that is <= ``now``, in UTC (None if none in 50 years)."""
    require_aware("now", now)
    now_utc = now.astimezone(UTC)
    try:
        candidate: datetime | None = next(CronSim(expr, now.astimezone(zone), reverse=True)).astimezone(UTC)
    except StopIteration:
        return None
    if candidate is None or candidate > now_utc:  # defensive: reverse iteration must not overshoot
        return None
    # Reverse iteration runs on wall time too, so inside a repeated hour (and for a `now` exactly on
    # a fire time) it can return an earlier time than the true latest: walk forward to correct it.
    for instant in cron_after(expr, zone, candidate):
        if instant > now_utc:
            break
        candidate = instant
    return candidate


def _require_aware(**values: datetime | None) -> None:
    for name, value in values.items():
        if value is not None:
            require_aware(name, value)


def _interval_anchor(last_scheduled: datetime | None, created_at: datetime) -> datetime:
    return (last_scheduled if last_scheduled is not None else created_at).astimezone(UTC)


def _handled_floor(last_scheduled: datetime | None, created_at: datetime) -> datetime:
    """Due times <= this are handled: the last handled one, or just before creation."""
    if last_scheduled is not None:
        return last_scheduled.astimezone(UTC)
    return created_at.astimezone(UTC) - _EPSILON


def _parts(schedule: ScheduleLike) -> tuple[str | None, str | None, datetime | None]:
    """(cron, interval, once) with only the one that is in effect set (cron, then interval, then once)."""
    if schedule.cron is not None:
        return schedule.cron, None, None
    if schedule.interval is not None:
        return None, schedule.interval, None
    if schedule.once is not None:
        return None, None, require_aware("schedule.once", schedule.once).astimezone(UTC)
    raise ValueError("schedule has none of cron, interval or once; set exactly one")


def next_fire_time(
    schedule: ScheduleLike,
    time_zone: str,
    after: datetime,
    last_scheduled: datetime | None,
    created_at: datetime,
) -> datetime | None:
    """The next due time strictly after ``after`` (and after ``last_scheduled``), in UTC.

    - cron: the first fire time in ``time_zone`` after ``after``, never before ``created_at``;
    - interval: the first point of the grid ``(last_scheduled or created_at) + k * interval``
      (k >= 1) strictly after ``after``;
    - once: the ``once`` time itself while it has not been handled (``last_scheduled`` is None or
      earlier), even if it is not after ``after`` (then it is due now); None once handled.

    ``last_scheduled`` is the latest due time already handled (fired, skipped or missed).
    None also when a cron expression never fires again. Raises ValueError for an invalid schedule.
    """
    _require_aware(after=after, created_at=created_at, last_scheduled=last_scheduled)
    cron, interval, once = _parts(schedule)
    if once is not None:
        if last_scheduled is not None and last_scheduled >= once:
            return None
        return once
    floor = max(after.astimezone(UTC), _handled_floor(last_scheduled, created_at))
    if interval is not None:
        step = parse_interval(interval)
        anchor = _interval_anchor(last_scheduled, created_at)
        steps = (floor - anchor) // step + 1 if floor >= anchor else 1
        return anchor + steps * step
    assert cron is not None
    try:
        return next(cron_after(cron, load_zone(time_zone), floor))
    except StopIteration:
        return None


def most_recent_due(
    schedule: ScheduleLike,
    time_zone: str,
    now: datetime,
    last_scheduled: datetime | None,
    created_at: datetime,
) -> DueTime | None:
    """The latest due time <= ``now`` that has not been handled, or None if nothing is due.

    Not handled means after ``last_scheduled`` (the latest due time already fired, skipped or
    missed) or, when the task never ran, at or after ``created_at``; a ``once`` time is due even
    if it is a little before ``created_at`` (the starting deadline decides whether it still runs).
    Only the most recent due time is returned (CronJob v2: at most one catch-up after downtime);
    ``count`` says how many unhandled due times there were. Raises ValueError for an invalid schedule.
    """
    _require_aware(now=now, created_at=created_at, last_scheduled=last_scheduled)
    now_utc = now.astimezone(UTC)
    cron, interval, once = _parts(schedule)
    if once is not None:
        if once > now_utc or (last_scheduled is not None and last_scheduled >= once):
            return None
        return DueTime(once)
    if interval is not None:
        step = parse_interval(interval)
        anchor = _interval_anchor(last_scheduled, created_at)
        steps = (now_utc - anchor) // step
        if steps < 1:
            return None
        return DueTime(anchor + steps * step, min(steps, MISSED_COUNT_LIMIT), steps > MISSED_COUNT_LIMIT)
    assert cron is not None
    zone = load_zone(time_zone)
    latest = cron_latest(cron, zone, now_utc)
    floor = _handled_floor(last_scheduled, created_at)
    if latest is None or latest <= floor:
        return None
    count = 0
    for instant in cron_after(cron, zone, floor):
        if instant > latest:
            break
        count += 1
        if count > MISSED_COUNT_LIMIT:
            return DueTime(latest, MISSED_COUNT_LIMIT, too_many=True)
    return DueTime(latest, max(count, 1))
