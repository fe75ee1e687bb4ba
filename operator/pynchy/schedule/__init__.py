"""The pure scheduling core of ScheduledTasks: no Kubernetes, no I/O, no clock.

- ``timing``: interval parsing, time zones, next and most recent due times (cron via cronsim);
- ``validate``: schedule problems the API server cannot catch, as messages that say what to fix;
- ``decide``: what a task should do at a given instant (Wait, Fire, Skip, Missed, Suspended, Done);
- ``naming``: deterministic AgentRun names, so a create conflict means "already fired";
- ``spacing``: how often a schedule fires at its most frequent (the gateway's limit on agent-made tasks).
"""

from pynchy.schedule.decide import (
    ConcurrencyPolicy,
    Decision,
    Done,
    Fire,
    Invalid,
    Missed,
    Skip,
    Suspended,
    TaskState,
    Wait,
    decide,
)
from pynchy.schedule.naming import MAX_TASK_NAME, run_name, unix_minutes
from pynchy.schedule.spacing import shortest_gap
from pynchy.schedule.timing import (
    MIN_INTERVAL,
    MISSED_COUNT_LIMIT,
    DueTime,
    ScheduleLike,
    load_zone,
    most_recent_due,
    next_fire_time,
    parse_interval,
)
from pynchy.schedule.validate import validate_schedule

__all__ = [
    "MAX_TASK_NAME",
    "MIN_INTERVAL",
    "MISSED_COUNT_LIMIT",
    "ConcurrencyPolicy",
    "Decision",
    "Done",
    "DueTime",
    "Fire",
    "Invalid",
    "Missed",
    "ScheduleLike",
    "Skip",
    "Suspended",
    "TaskState",
    "Wait",
    "decide",
    "load_zone",
    "most_recent_due",
    "next_fire_time",
    "parse_interval",
    "run_name",
    "shortest_gap",
    "unix_minutes",
    "validate_schedule",
]
