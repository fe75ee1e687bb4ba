"""AgentRun: one execution of a Group's agent (one pod lifetime serving one or more turns)."""

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

RunPhase = Literal["Pending", "Running", "Succeeded", "Failed", "TimedOut"]


class RunTrigger(ApiModel):
    """Why the run exists."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": validations(
            cel(
                "self.kind != 'Schedule' || (has(self.scheduledTaskRef) && has(self.scheduledTime))",
                "a Schedule trigger needs scheduledTaskRef and scheduledTime",
            ),
            cel(
                "self.kind == 'Schedule' || (!has(self.scheduledTaskRef) && !has(self.scheduledTime))",
                "scheduledTaskRef and scheduledTime are only allowed when kind is Schedule",
            ),
        )
    }

    kind: Literal["Message", "Schedule", "Manual"] = Field(
        default="Manual",
        description="Message (the gateway, for queued turns), Schedule (a ScheduledTask) or Manual (kubectl).",
    )
    scheduled_task_ref: LocalObjectReference | None = Field(default=None, description="The ScheduledTask that fired.")
    scheduled_time: Timestamp | None = Field(default=None, description="The due time that fired.")


class AgentRunSpec(ApiModel):
    """Desired state of an AgentRun. Immutable: create a new AgentRun instead of editing one."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": validations(cel("self == oldSelf", "AgentRun spec is immutable; create a new AgentRun"))
    }

    group_ref: LocalObjectReference = Field(description="The Group whose agent runs.")
    trigger: RunTrigger = Field(default_factory=RunTrigger, description="Why the run exists.")
    prompt: str | None = Field(
        default=None,
        description="Served as the run's first turn (schedules, manual runs); "
        "message runs take their turns from the gateway.",
        max_length=16384,
    )
    context_mode: Literal["group", "isolated"] = Field(
        default="group",
        description="'group' resumes the Group's session; 'isolated' starts a fresh one.",
    )
    deliver: bool = Field(default=True, description="Post the agent's replies to the Group's channel.")
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        le=2592000,
        description="Delete the run this long after it finishes; empty uses the operator default.",
    )


class Usage(ApiModel):
    """Model usage of the run, metered by the gateway's model proxy (every call, side requests too)."""

    input_tokens: int = Field(default=0, ge=0, description="Input tokens billed.")
    output_tokens: int = Field(default=0, ge=0, description="Output tokens billed.")
    cache_read_input_tokens: int = Field(default=0, ge=0, description="Input tokens read from the prompt cache.")
    cache_creation_input_tokens: int = Field(default=0, ge=0, description="Input tokens written to the prompt cache.")
    cost_usd: float = Field(
        default=0.0,
        ge=0,
        alias="costUSD",
        description="Cost in US dollars, priced by the gateway from the metered tokens and its price table.",
    )
    reported_cost_usd: float | None = Field(
        default=None,
        ge=0,
        alias="reportedCostUSD",
        description="The agent runner's own estimate of the cost, for comparison; never used for budgets.",
    )


class AgentRunStatus(ApiModel):
    """Observed state of an AgentRun."""

    observed_generation: int | None = observed_generation_field()
    conditions: list[Condition] = conditions_field()
    phase: RunPhase | None = Field(default=None, description="Pending, Running, Succeeded, Failed or TimedOut.")
    reason: str | None = Field(
        default=None, description="CamelCase reason for the phase, for example Queued.", max_length=128
    )
    message: str | None = Field(default=None, description="Details for people.", max_length=4096)
    pod_name: str | None = Field(default=None, description="The agent pod.", max_length=253)
    start_time: Timestamp | None = Field(default=None, description="When the agent pod started.")
    completion_time: Timestamp | None = Field(default=None, description="When the run finished.")
    turns_served: int = Field(default=0, ge=0, description="Turns the agent answered in this run.")
    session_id: str | None = Field(default=None, description="Claude session id used by this run.", max_length=128)
    usage: Usage | None = Field(default=None, description="Token usage and cost of the run.")
    last_reply: str | None = Field(
        default=None,
        description="The start of the agent's latest reply (reported by the gateway).",
        max_length=512,
    )
