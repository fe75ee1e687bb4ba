"""Deterministic AgentRun names for scheduled runs (CronJob's exactly-once trick).

The name is ``<task>-<unix minutes of the due time>``, exactly as the CronJob controller names
its Jobs. Creating the same run twice (an operator restart, two replicas, a retried handler)
hits a 409 Conflict, which means "already fired". Due times are at least a minute apart (the
1m interval minimum, cron's minute granularity), so each gets its own name.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from pynchy.api.base import DNS_LABEL
from pynchy.schedule.timing import require_aware

# CronJob's limit: 52 characters leave room for "-" and a 10-digit minute count in a 63-char label.
MAX_TASK_NAME = 52
MAX_RUN_NAME = 63

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DNS_LABEL = re.compile(DNS_LABEL)


def unix_minutes(when: datetime) -> int:
    """Whole minutes since the Unix epoch, rounded down (seconds are ignored)."""
    require_aware("scheduled_time", when)
    return (when - _EPOCH) // timedelta(minutes=1)


def run_name(task_name: str, scheduled_time: datetime) -> str:
    """The AgentRun name for the run of ``task_name`` due at ``scheduled_time``: ``<task>-<unix minutes>``.

    Raises ValueError if ``task_name`` is not a DNS label of at most 52 characters, or
    ``scheduled_time`` is naive or before 1970.
    """
    if len(task_name) > MAX_TASK_NAME or not _DNS_LABEL.match(task_name):
        raise ValueError(
            f"task name {task_name!r} must be a DNS label (lower-case letters, digits and '-', starting and "
            f"ending with a letter or digit) of at most {MAX_TASK_NAME} characters"
        )
    minutes = unix_minutes(scheduled_time)
    if minutes < 0:
        raise ValueError(f"scheduled_time {scheduled_time.isoformat()} is before 1970")
    name = f"{task_name}-{minutes}"
    if len(name) > MAX_RUN_NAME:  # defensive: up to year 9999 the minute count has at most 10 digits
        raise ValueError(f"run name {name!r} is longer than {MAX_RUN_NAME} characters")
    return name
