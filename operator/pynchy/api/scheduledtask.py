"""ScheduledTask: wake a Group's agent on a schedule (CronJob-like)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pynchy.api.base import (
    ApiModel,
    Condition,
    LocalObjectReference,
    Timestamp,
    cel,
    conditions_field,
    observed_generation_field,
    validations,
)

CRON_FIELD = r"[0-9A-Za-z*?,/-]+"


class Schedule(ApiModel):
    """When the task fires: exactly one of cron, interval or once."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": validations(
            cel(
                "[has(self.cron), has(self.interval), has(self.once)].filter(x, x).size() == 1",
                "set exactly one of schedule.cron, schedule.interval or schedule.once",
            )
        )
    }

    cron: str | None = Field(
        default=None,
        description="Five-field cron expression (minute hour day-of-month month day-of-week), "
        "for example '0 9 * * 1-5', evaluated in spec.timeZone.",
        max_length=128,
        json_schema_extra=validations(
            cel(
                f"self.matches('^\\\\s*{CRON_FIELD}(\\\\s+{CRON_FIELD}){{4}}\\\\s*$')",
                "cron must have exactly five fields (minute hour day-of-month month day-of-week), "
                "for example '0 9 * * 1-5'; @-macros and a seconds field are not supported",
            )
        ),
    )
    interval: str | None = Field(
        default=None,
        description="Fixed interval between runs as a duration, for example 30m, 2h or 1h30m.",
        max_length=32,
        json_schema_extra=validations(
            cel(
                "self.matches('^([0-9]+h)?([0-9]+m)?([0-9]+s)?$') && self != ''",
                "interval must be a duration made of hours, minutes and seconds, for example 30m or 1h30m",
            ),
            cel(
                "!self.matches('^([0-9]+h)?([0-9]+m)?([0-9]+s)?$') || self == '' || duration(self) >= duration('1m')",
                "interval must be at least 1m",
            ),
        ),
    )
    once: Timestamp | None = Field(
        default=None,
        description="A single run at this RFC 3339 time, for example 2026-12-24T18:00:00Z.",
    )


class ScheduledTaskSpec(ApiModel):
    """Desired state of a ScheduledTask."""

    group_ref: LocalObjectReference = Field(description="The Group whose agent runs the task.")
    prompt: str = Field(description="What the agent is asked to do at each run.", min_length=1, max_length=16384)
    schedule: Schedule = Field(description="When the task runs.")
    time_zone: str = Field(
        default="UTC",
        description="IANA time zone for cron schedules, for example Europe/Berlin.",
        min_length=1,
        max_length=64,
        pattern=r"^(UTC|[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2})$",
    )
    context_mode: Literal["isolated", "group"] = Field(
        default="isolated",
        description="'isolated': a fresh session per run; 'group': the prompt joins the Group's "
        "conversation and continues its session.",
    )
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] = Field(
        default="Forbid",
        description="What to do when a run is due while the previous one is still active: Allow a second, "
        "Forbid (skip this one), or Replace the active run.",
    )
    starting_deadline_seconds: int | None = Field(
        default=300,
        ge=0,
        le=604800,
        description="A run that cannot start within this many seconds of its due time is recorded as missed.",
    )
    suspend: bool = Field(default=False, description="Stop starting new runs; active runs continue.")
    deliver: bool = Field(default=True, description="Post the run's result to the Group's channel.")
    successful_runs_history_limit: int = Field(
        default=3, ge=0, le=50, description="Finished successful AgentRuns to keep."
    )
    failed_runs_history_limit: int = Field(default=1, ge=0, le=50, description="Failed AgentRuns to keep.")


class RunRecord(ApiModel):
    """One past or active run of the task."""

    run_name: str | None = Field(default=None, description="The AgentRun, if one was created.", max_length=253)
    scheduled_time: Timestamp = Field(description="The due time this run was for.")
    start_time: Timestamp | None = Field(default=None, description="When the run started.")
    finish_time: Timestamp | None = Field(default=None, description="When the run finished.")
    outcome: Literal["Active", "Succeeded", "Failed", "Missed", "Skipped"] = Field(
        description="Active, Succeeded, Failed, Missed (past its starting deadline) or Skipped (concurrency)."
    )
    summary: str | None = Field(default=None, description="Short result or reason.", max_length=512)


class ScheduledTaskStatus(ApiModel):
    """Observed state of a ScheduledTask."""

    observed_generation: int | None = observed_generation_field()
    conditions: list[Condition] = conditions_field()
    last_schedule_time: Timestamp | None = Field(default=None, description="The last due time a run was started for.")
    last_successful_time: Timestamp | None = Field(default=None, description="When a run last succeeded.")
    next_schedule_time: Timestamp | None = Field(default=None, description="The next due time; empty when none.")
    active: list[LocalObjectReference] = Field(
        default_factory=list, max_length=50, description="AgentRuns of this task that are running now."
    )
    history: list[RunRecord] = Field(
        default_factory=list, max_length=20, description="The most recent runs, newest first."
    )
