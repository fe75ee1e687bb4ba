"""Schedule problems the API server cannot catch with OpenAPI and CEL rules.

The CRD already checks the shape (five cron fields, the duration pattern, exactly one of
cron/interval/once); this checks meaning: what cronsim rejects, unknown time zones, intervals
under a minute, and a ``once`` that was already over when the task was created. Every message
says what to fix, so the operator can put it straight into the Accepted condition.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

from cronsim import CronSim, CronSimError

from pynchy.schedule.timing import (
    MIN_INTERVAL,
    ScheduleLike,
    cron_after,
    load_zone,
    parse_interval,
    require_aware,
)

# A `once` this close before creation still counts as "now" (an agent asking for "right away",
# clock skew between the gateway and the API server); the starting deadline then decides.
ONCE_GRACE = timedelta(minutes=1)


def validate_schedule(
    schedule: ScheduleLike,
    time_zone: str,
    now: datetime,
    created_at: datetime | None = None,
) -> list[str]:
    """Problems with ``schedule`` and ``time_zone`` as messages that say what to fix; empty when fine.

    ``now`` is used to check that a cron expression still fires. Pass ``created_at`` (the task's
    metadata.creationTimestamp) to also reject a ``once`` that was already in the past when the task
    was created; it compares with the creation time, not ``now``, so a ``once`` that was valid at
    creation never becomes invalid after it fired.
    """
    require_aware("now", now)
    problems: list[str] = []
    set_fields = [name for name in ("cron", "interval", "once") if getattr(schedule, name) is not None]
    if len(set_fields) != 1:
        problems.append(
            "set exactly one of schedule.cron, schedule.interval or schedule.once"
            + (f" (found {', '.join(set_fields)})" if set_fields else "")
        )
    try:
        zone = load_zone(time_zone)
    except ValueError as exc:
        problems.append(f"spec.timeZone: {exc}")
        zone = UTC
    if schedule.cron is not None:
        problems.extend(_cron_problems(schedule.cron, zone, now))
    if schedule.interval is not None:
        problems.extend(_interval_problems(schedule.interval))
    if schedule.once is not None and created_at is not None:
        require_aware("created_at", created_at)
        once = require_aware("schedule.once", schedule.once)
        if once < created_at - ONCE_GRACE:
            problems.append(
                f"schedule.once {once.astimezone(UTC).isoformat()} was already in the past when the task was "
                f"created ({created_at.astimezone(UTC).isoformat()}); set a time in the future"
            )
    return problems


def _cron_problems(expr: str, zone: tzinfo, now: datetime) -> list[str]:
    example = "for example '0 9 * * 1-5' (09:00 on weekdays)"
    if len(expr.split()) != 5:
        return [
            f"schedule.cron {expr!r} must have exactly five fields (minute hour day-of-month month day-of-week), "
            f"{example}"
        ]
    try:
        CronSim(expr, now)
    except CronSimError as exc:
        return [
            f"schedule.cron {expr!r} is not a valid cron expression: {exc} (minute 0-59, hour 0-23, "
            f"day-of-month 1-31 and a day that exists in the month, month 1-12 or JAN-DEC, day-of-week 0-7 "
            f"or SUN-SAT); {example}"
        ]
    if next(cron_after(expr, zone, now), None) is None:
        return [f"schedule.cron {expr!r} never fires (no matching date in the next 50 years); {example}"]
    return []


def _interval_problems(text: str) -> list[str]:
    try:
        step = parse_interval(text)
    except ValueError as exc:
        return [f"schedule.{exc}"]
    if step < MIN_INTERVAL:
        return [f"schedule.interval {text!r} is shorter than the 1m minimum; use 1m or more, for example 5m"]
    return []
