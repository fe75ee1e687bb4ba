"""What a ScheduledTask should do now: the pure decision the operator's controller acts on.

``decide(now, state)`` follows the CronJob v2 controller (k8s ``pkg/controller/cronjob``):

- only the most recent unhandled due time is considered, so downtime causes at most one catch-up
  run, and only if ``now - due <= startingDeadlineSeconds`` (None: no deadline);
- a due time past the deadline is reported as ``Missed`` and the next wait starts from ``now``;
- concurrency: Allow fires alongside active runs, Forbid skips while runs are active, Replace
  fires and names the active runs to delete first;
- ``suspend`` starts nothing new (active runs continue).

Every decision carries ``next_time``: the next due time after the one it handled, for
status.nextScheduleTime and for the operator's requeue; None when nothing is coming without a
spec change. The operator must treat the due time of a Fire, Skip or Missed as handled, i.e. pass
it back as ``last_scheduled`` (the newest of status.lastScheduleTime and the history's Skipped or
Missed records), otherwise the same due time is decided again on the next tick.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from pynchy.schedule.timing import DueTime, ScheduleLike, most_recent_due, next_fire_time, require_aware
from pynchy.schedule.validate import validate_schedule

if TYPE_CHECKING:
    from pynchy.api.scheduledtask import ScheduledTaskSpec

ConcurrencyPolicy = Literal["Allow", "Forbid", "Replace"]


@dataclass(frozen=True, kw_only=True)
class TaskState:
    """Everything ``decide`` needs about one ScheduledTask.

    ``last_scheduled`` is the latest due time already handled (a run was created for it, or it was
    recorded as Skipped or Missed); None if the task never handled one. ``created_at`` is
    metadata.creationTimestamp. ``active`` names the AgentRuns of this task that are still running.
    """

    schedule: ScheduleLike
    created_at: datetime
    time_zone: str = "UTC"
    suspend: bool = False
    starting_deadline_seconds: int | None = 300
    concurrency_policy: ConcurrencyPolicy = "Forbid"
    active: tuple[str, ...] = ()
    last_scheduled: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "active", tuple(self.active))
        require_aware("created_at", self.created_at)
        if self.last_scheduled is not None:
            require_aware("last_scheduled", self.last_scheduled)
        if self.concurrency_policy not in ("Allow", "Forbid", "Replace"):
            raise ValueError(f"concurrency_policy must be Allow, Forbid or Replace, not {self.concurrency_policy!r}")

    @classmethod
    def from_spec(
        cls,
        spec: ScheduledTaskSpec,
        *,
        created_at: datetime,
        last_scheduled: datetime | None = None,
        active: Sequence[str] = (),
    ) -> TaskState:
        """Build the state from a ScheduledTask spec plus what the operator observed."""
        return cls(
            schedule=spec.schedule,
            created_at=created_at,
            time_zone=spec.time_zone,
            suspend=spec.suspend,
            starting_deadline_seconds=spec.starting_deadline_seconds,
            concurrency_policy=spec.concurrency_policy,
            active=tuple(active),
            last_scheduled=last_scheduled,
        )


@dataclass(frozen=True, kw_only=True)
class Wait:
    """Nothing is due: look again at ``until`` (the next due time)."""

    until: datetime

    @property
    def next_time(self) -> datetime:
        return self.until


@dataclass(frozen=True, kw_only=True)
class Fire:
    """Create the run for ``scheduled_time``, after deleting the runs in ``replace_active`` (Replace).

    ``missed_count`` older due times were passed over without a run (downtime); ``too_many_missed``
    says that count stopped at its limit.
    """

    scheduled_time: datetime
    next_time: datetime | None
    replace_active: tuple[str, ...] = ()
    missed_count: int = 0
    too_many_missed: bool = False


@dataclass(frozen=True, kw_only=True)
class Skip:
    """``scheduled_time`` is due but runs are active and the policy is Forbid: record it as Skipped."""

    scheduled_time: datetime
    next_time: datetime | None
    active: tuple[str, ...] = ()
    reason: Literal["ConcurrencyForbid"] = "ConcurrencyForbid"
    missed_count: int = 0
    too_many_missed: bool = False


@dataclass(frozen=True, kw_only=True)
class Missed:
    """The most recent due time is past the starting deadline: record it as Missed, start nothing.

    ``missed_count`` counts every unhandled due time, ``scheduled_time`` included.
    """

    scheduled_time: datetime
    next_time: datetime | None
    missed_count: int = 1
    too_many_missed: bool = False
    reason: Literal["DeadlineExceeded"] = "DeadlineExceeded"


@dataclass(frozen=True, kw_only=True)
class Suspended:
    """spec.suspend is true: start nothing; a spec change brings the task back."""

    next_time: None = None


@dataclass(frozen=True, kw_only=True)
class Done:
    """Nothing will ever be due again: a ``once`` that was handled (fired, skipped or missed)."""

    next_time: None = None


@dataclass(frozen=True, kw_only=True)
class Invalid:
    """The schedule cannot be evaluated; ``problems`` say what to fix (for the Accepted condition)."""

    problems: tuple[str, ...] = field(default_factory=tuple)
    next_time: None = None


Decision = Wait | Fire | Skip | Missed | Suspended | Done | Invalid


def decide(now: datetime, state: TaskState) -> Decision:
    """What to do at ``now`` (aware) for the task described by ``state``. Pure: same input, same answer."""
    require_aware("now", now)
    now = now.astimezone(UTC)
    problems = validate_schedule(state.schedule, state.time_zone, now)
    if problems:
        return Invalid(problems=tuple(problems))

    due = most_recent_due(state.schedule, state.time_zone, now, state.last_scheduled, state.created_at)
    if due is None:
        upcoming = next_fire_time(state.schedule, state.time_zone, now, state.last_scheduled, state.created_at)
        if upcoming is None:
            return Done()
        if state.suspend:
            return Suspended()
        return Wait(until=upcoming)
    if state.suspend:
        return Suspended()
    return _handle_due(now, state, due)


def _handle_due(now: datetime, state: TaskState, due: DueTime) -> Fire | Skip | Missed:
    following = next_fire_time(state.schedule, state.time_zone, max(now, due.time), due.time, state.created_at)
    deadline = state.starting_deadline_seconds
    if deadline is not None and now - due.time > timedelta(seconds=deadline):
        return Missed(
            scheduled_time=due.time,
            next_time=following,
            missed_count=due.count,
            too_many_missed=due.too_many,
        )
    older_missed = due.count - 1
    if state.active and state.concurrency_policy == "Forbid":
        return Skip(
            scheduled_time=due.time,
            next_time=following,
            active=state.active,
            missed_count=older_missed,
            too_many_missed=due.too_many,
        )
    replace = state.active if state.concurrency_policy == "Replace" else ()
    return Fire(
        scheduled_time=due.time,
        next_time=following,
        replace_active=replace,
        missed_count=older_missed,
        too_many_missed=due.too_many,
    )
