"""How often a schedule fires at its most frequent: what a limit on agent-made schedules compares.

Pure, like the rest of the core: ``after`` is passed in. An interval fires every interval; a
``once`` has no spacing. A cron expression's gaps vary (``0,5 9 * * *``: 5 minutes, then a day), so
its shortest gap is looked for among its next firings, up to ``CRON_FIRINGS`` of them within
``CRON_HORIZON``: enough to see a whole day of any expression that fires at most every two minutes
(720 a day) and the weeks around it, while a rare expression (a leap day) stops at the horizon
instead of walking centuries. A gap that only a daylight-saving change creates is seen only when
the change lies in that window.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cronsim import CronSimError

from pynchy.schedule.timing import ScheduleLike, cron_after, load_zone, parse_interval, require_aware

CRON_FIRINGS = 1000
CRON_HORIZON = timedelta(days=400)


def shortest_gap(
    schedule: ScheduleLike,
    time_zone: str,
    after: datetime,
    *,
    stop_below: timedelta | None = None,
) -> timedelta | None:
    """The shortest time between two consecutive due times of ``schedule`` after ``after``.

    None for a ``once`` (nothing repeats) and for a cron expression that fires at most once in the
    window. ``stop_below``: stop at the first cron gap shorter than it and return that gap (a caller
    that only asks "is any gap shorter than my limit?" need not look further). Raises ValueError for
    a schedule that cannot be evaluated (a bad interval, cron expression or time zone).
    """
    require_aware("after", after)
    if schedule.cron is not None:
        return _cron_gap(schedule.cron, time_zone, after.astimezone(UTC), stop_below)
    if schedule.interval is not None:
        return parse_interval(schedule.interval)
    return None


def _cron_gap(expr: str, time_zone: str, after: datetime, stop_below: timedelta | None) -> timedelta | None:
    zone = load_zone(time_zone)
    shortest: timedelta | None = None
    previous: datetime | None = None
    end: datetime | None = None
    try:
        for count, instant in enumerate(cron_after(expr, zone, after)):
            if end is None:
                end = instant + CRON_HORIZON
            if count >= CRON_FIRINGS or instant > end:
                break
            if previous is not None:
                gap = instant - previous
                shortest = gap if shortest is None else min(shortest, gap)
                if stop_below is not None and gap < stop_below:
                    break
            previous = instant
    except CronSimError as exc:
        raise ValueError(f"schedule.cron {expr!r} is not a valid cron expression: {exc}") from None
    return shortest
